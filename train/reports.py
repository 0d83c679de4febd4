"""Run outputs: metrics.csv (per epoch and fold), summary.json / summary.md (mean and std over folds), plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.atomic import atomic_write_json, atomic_write_text
from hep2edge.labels import PATTERNS
from hep2edge.metrics import LEVELS, mean_std
from hep2edge.train.config import TrainConfig
from hep2edge.train.loop import FoldResult
from hep2edge.train.plots import write_plots
from hep2edge.workspace import config_to_dict

METRIC_ROWS = (
    ("dice", "Mask Dice"),
    ("iou", "Mask IoU"),
    ("pixel_accuracy", "Mask pixel accuracy"),
    ("pattern_accuracy", "Pattern accuracy"),
    ("pattern_mca", "Pattern mean class accuracy"),
    ("intensity_accuracy", "Intensity accuracy"),
    ("intensity_auc", "Intensity ROC AUC"),
)
CELL_ROWS = (
    ("aji", "Aggregated Jaccard index (AJI)"),
    ("pq", "Panoptic quality (PQ)"),
    ("dq", "Detection quality (DQ)"),
    ("sq", "Segmentation quality (SQ)"),
    ("f1", "Cell F1 (IoU > 0.5)"),
    ("centroid_f1", "Centroid F1"),
    ("count_relative_error", "Cell count relative error"),
    ("miou", "Pattern map mIoU (8 classes, background included)"),
)
LEVEL_NOTES = {
    "patch": "each tile",
    "image": "mean of its tiles' probabilities",
    "patient": "mean of its images' probabilities",
}


def monitor_path(monitor: str) -> str:
    """Where the monitored figure sits in a fold's `metrics` (what `hep2edge export` looks up)."""
    return monitor if monitor in ("score", "val_loss") else f"patch.{monitor}"


def metrics_csv(results: list[FoldResult]) -> str:
    rows = [row for result in results for row in result.progress.history]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def summed_confusion(results: list[FoldResult]) -> dict[str, np.ndarray]:
    total = {level: np.zeros((len(PATTERNS), len(PATTERNS)), dtype=np.int64) for level in LEVELS}
    for result in results:
        for level, matrix in result.progress.best_confusion.items():
            total[level] += np.asarray(matrix, dtype=np.int64)
    return total


def build_summary(config: TrainConfig, results: list[FoldResult], world_size: int = 1) -> dict[str, Any]:
    scored = [r for r in results if r.progress.best_metrics]
    mean, std = mean_std([r.progress.best_metrics for r in scored])
    cells = {"cells": cells_note(config)} if config.cell_metrics else {}
    return {
        "monitor": monitor_path(config.monitor),
        "monitor_mode": "min" if config.monitor == "val_loss" else "max",
        "levels": {level: LEVEL_NOTES[level] for level in LEVELS},
        "patterns": list(PATTERNS),
        "folds": [
            {
                "fold": r.fold,
                "checkpoint": str(r.checkpoint.relative_to(config.run_dir)) if r.checkpoint.is_file() else None,
                "best_epoch": r.progress.best_epoch + 1,
                "epochs_run": r.progress.next_epoch,
                "metrics": r.progress.best_metrics,
                "confusion": r.progress.best_confusion,
            }
            for r in results
        ],
        "mean": mean,
        "std": std,
        "confusion": {level: m.tolist() for level, m in summed_confusion(results).items()},
        "world_size": world_size,
        **cells,
        "config": config_to_dict(config),
    }


def cells_note(config: TrainConfig) -> dict[str, Any]:
    """Where the per-cell figures sit and how they were made (summary.json `cells`)."""
    return {
        "level": "patch",
        "keys": [key for key, _ in CELL_ROWS if key != "miou" or config.pattern_map],
        "instances_from": "mask + distance map (watershed)" if config.instances else "mask connected components",
        "note": "per held-out tile, mean over tiles; in folds[i].metrics.patch and mean.patch / std.patch",
    }


def _cell(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def level_table(summary: dict[str, Any], level: str,
                rows: tuple[tuple[str, str], ...] = METRIC_ROWS) -> list[str]:
    """The seed report's table shape: one row per metric, one column per fold, then mean ± std."""
    folds = summary["folds"]
    header = ["Metric"] + [f"Fold {f['fold']}" for f in folds] + ["Mean ± std"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, name in rows:
        cells = [_cell(f["metrics"].get(level, {}).get(key)) if f["metrics"] else "-" for f in folds]
        mean, std = summary["mean"][level].get(key), summary["std"][level].get(key)
        cells.append(f"{_cell(mean)} ± {_cell(std)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def confusion_table(matrix: list[list[int]]) -> list[str]:
    lines = ["| true \\ predicted | " + " | ".join(PATTERNS) + " |", "|" + "---|" * (len(PATTERNS) + 1)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(PATTERNS, matrix)]
    return lines


def summary_markdown(summary: dict[str, Any], config: TrainConfig) -> str:
    lines = [
        "# Training summary",
        "",
        f"Encoder `{config.encoder}`, tile {config.tile} px, {config.folds}-fold patient-wise cross-validation, "
        f"segmentation loss `{config.seg_loss}`, weighting `{config.weighting}`"
        + (f" (alpha {config.alpha})" if config.weighting == "gradnorm" else "")
        + f", {config.epochs} epochs max; best epoch per fold by `{summary['monitor']}` on the held-out fold.",
        "",
    ]
    for level in LEVELS:
        lines += [f"## {level.capitalize()} level ({LEVEL_NOTES[level]})", "", *level_table(summary, level), ""]
    if "cells" in summary:
        rows = tuple(row for row in CELL_ROWS if row[0] in summary["cells"]["keys"])
        lines += [f"## Cells (patch level; instances from {summary['cells']['instances_from']})", "",
                  *level_table(summary, "patch", rows), ""]
    lines += ["## Pattern confusion (patch level, summed over folds)", "",
              *confusion_table(summary["confusion"]["patch"]), ""]
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """NaN / inf -> None so summary.json stays standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_reports(config: TrainConfig, results: list[FoldResult], world_size: int = 1) -> Path:
    """metrics.csv, summary.json, summary.md and plots/ in the run folder; returns summary.json."""
    out = config.run_dir
    atomic_write_text(out / "metrics.csv", metrics_csv(results))
    summary = build_summary(config, results, world_size)
    write_plots(out, {r.fold: r.progress.history for r in results},
                {level: np.asarray(m) for level, m in summary["confusion"].items()})
    atomic_write_text(out / "summary.md", summary_markdown(summary, config))
    atomic_write_json(out / "summary.json", json_safe(summary))
    return out / "summary.json"
