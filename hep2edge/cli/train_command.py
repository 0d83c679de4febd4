"""`hep2edge train`: patient-wise k-fold training of the multi-task U-Net (thin over hep2edge.train.run)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hep2edge.cli.app import app
from hep2edge.cli.common import console, import_stage, show_resolved
from hep2edge.cli.reporter import RichReporter
from hep2edge.cli.runtime_options import shared_options
from hep2edge.cli.train_options import TRAIN_OPTIONS
from hep2edge.errors import ConfigError
from hep2edge.workspace import newest_run_dir


def _floats(text: str, counts: tuple[int, ...], option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).replace(",", " ").split())
    except ValueError:
        values = ()
    if len(values) not in counts:
        expected = " or ".join(str(c) for c in sorted(set(counts)))
        raise ConfigError(f"{option} {text!r}: expected {expected} numbers separated by commas")
    return values


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in str(text).replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected integers separated by commas, e.g. 256,128,64,32,16") from None


def _data_dirs(data: list[Path] | None) -> tuple[Path, ...]:
    """The --data folders (one or several); one line naming every folder that is not there."""
    if not data:
        raise ConfigError("no dataset: pass --data DIR or set `train: {data: DIR}` in hep2edge.yaml")
    missing = [str(folder) for folder in data if not Path(folder).is_dir()]
    if missing:
        raise ConfigError(f"--data {', '.join(missing)}: no such dataset folder")
    return tuple(Path(folder) for folder in data)


def _out_dir(out: Path | None, resume: bool) -> Path | None:
    """--out; with --resume and no --out the newest runs/train/<n>; None = the next one (made later)."""
    if out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("under torchrun pass --out RUN so that every process writes to the same run folder")
    if out is None and resume:
        newest = newest_run_dir("train")
        if newest is None:
            raise ConfigError("--resume: no runs/train/<n> here to continue; pass --out RUN")
        return newest
    return out


def _print_summary(summary_path: Path) -> None:
    """Mean ± std over the held-out folds, one row per level."""
    from rich.table import Table

    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    keys = ("dice", "pattern_accuracy", "pattern_mca", "intensity_accuracy", "intensity_auc")
    table = Table(title=f"held-out folds {[f['fold'] for f in summary['folds']]}: mean ± std over folds")
    table.add_column("level")
    for key in keys:
        table.add_column(key, justify="right")
    for level in ("patch", "image", "patient"):
        cells = []
        for key in keys:
            mean, std = summary["mean"][level].get(key), summary["std"][level].get(key)
            cells.append("-" if mean is None else f"{mean:.3f} ± {std or 0:.3f}")
        table.add_row(level, *cells)
    console.print(table)
    if "cells" in summary:
        cells = [f"{key} {summary['mean']['patch'][key]:.3f} ± {summary['std']['patch'].get(key) or 0:.3f}"
                 for key in ("aji", "pq", "f1", "miou") if summary["mean"]["patch"].get(key) is not None]
        console.print(f"cells (patch level): {', '.join(cells)}", highlight=False)
    console.print(f"wrote {summary_path} and {summary_path.with_suffix('.md')}", highlight=False)


@app.command()
@shared_options(TRAIN_OPTIONS)
def train(**options: Any) -> None:
    """Train with patient-wise k-fold cross-validation; writes checkpoints, metrics, plots and a summary."""
    config_module: Any = import_stage("hep2edge.train.config")  # a missing `train` extra is said first
    run_module: Any = import_stage("hep2edge.train.run")
    dense = options["instances"] + options["pattern_map"]
    config = config_module.TrainConfig(**{
        **options, "data": _data_dirs(options["data"]), "out": _out_dir(options["out"], options["resume"]),
        "decoder_channels": _ints(options["decoder_channels"], "--decoder-channels"),
        "fold": config_module.parse_fold(options["fold"]),
        "task_weights": _floats(options["task_weights"], (3, 3 + dense), "--task-weights"),
    })
    if int(os.environ.get("RANK", "0")) == 0:
        show_resolved("train", config)
    summary = run_module.run_training(config, RichReporter(console))
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(summary)
