"""`hep2edge train`: patient-wise k-fold training of the multi-task U-Net (thin over hep2edge.train.run)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from hep2edge.cli.app import app
from hep2edge.cli.common import console, import_stage, show_resolved
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
def train(
    data: list[Path] = typer.Option(None, "--data", show_default=False,
                                    help="Dataset folder (images, masks, labels.csv); repeat to train on several."),
    out: Path = typer.Option(None, "--out", help="Run folder (default: the next runs/train/<n>).", show_default=False),
    manifest: Path = typer.Option(None, "--manifest", help="Manifest CSV (default: the dataset's labels.csv)."),
    allow_outside: bool = typer.Option(False, "--allow-outside",
                                       help="Accept manifest paths that resolve outside the dataset folder."),
    folds_file: Path = typer.Option(None, "--folds-file", help="Reuse patient folds from this JSON."),
    encoder: str = typer.Option("efficientnet-b4", "--encoder",
                                help="Any segmentation_models_pytorch encoder, tu-<timm model> included."),
    encoder_weights: str = typer.Option("none", "--encoder-weights", help="none | imagenet | PATH to a state dict."),
    in_channels: int = typer.Option(1, "--in-channels", help="1 (gray) or 3 (gray replicated)."),
    channel_policy: str = typer.Option("luminance", "--channel-policy", help="How colour images become gray."),
    decoder_channels: str = typer.Option("256,128,64,32,16", "--decoder-channels",
                                         help="Decoder widths per stage (unet, unetplusplus, manet)."),
    arch: str = typer.Option("unet", "--arch", help="Decoder: unet | unetplusplus | manet | linknet | fpn | pspnet "
                             "| pan | deeplabv3 | deeplabv3plus | upernet | segformer."),
    attention: str = typer.Option("none", "--attention", help="Decoder attention: none | scse (unet, unetplusplus)."),
    instances: bool = typer.Option(False, "--instances/--no-instances",
                                   help="Distance-map head: cells split by watershed; per-cell metrics (AJI, PQ)."),
    pattern_map: bool = typer.Option(False, "--pattern-map/--no-pattern-map",
                                     help="Per-pixel pattern head (background + 7 patterns; cells.csv classes)."),
    distance_loss: str = typer.Option("l1", "--distance-loss", help="Distance head loss: l1 | mse."),
    pattern_map_dice: bool = typer.Option(True, "--pattern-map-dice/--no-pattern-map-dice",
                                          help="Pattern map loss: cross-entropy + soft Dice (or cross-entropy only)."),
    pool_levels: int = typer.Option(1, "--pool-levels", help="Encoder stages pooled into the heads (1-5)."),
    dropout: float = typer.Option(0.3, "--dropout", help="Dropout before the classification heads."),
    tile: int = typer.Option(384, "--tile", help="Tile size in pixels (multiple of 32)."),
    normalization: str = typer.Option("fixed", "--normalization", help="fixed (by dtype) | minmax (per tile)."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Flips, rotations, photometric changes."),
    epochs: int = typer.Option(30, "--epochs", help="Epochs per fold."),
    batch_size: int = typer.Option(8, "--batch-size", help="Tiles per step (per process)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Adam weight decay."),
    scheduler: str = typer.Option("cosine", "--scheduler", help="cosine | plateau | none."),
    folds: int = typer.Option(5, "--folds", help="Patient-wise folds."),
    fold: str = typer.Option("all", "--fold", help="all, or one fold number to train."),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, initialisation, order and augmentation."),
    seg_loss: str = typer.Option("dice", "--seg-loss", help="dice | bce | dice+bce."),
    class_weights: bool = typer.Option(False, "--class-weights/--no-class-weights",
                                       help="Inverse-frequency pattern class weights."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Pattern label smoothing."),
    weighting: str = typer.Option("fixed", "--weighting",
                                  help="fixed | gradnorm (the seeds' choice) | uncertainty."),
    task_weights: str = typer.Option("1,1,1", "--task-weights",
                                     help="Initial / fixed weights: mask,pattern,intensity[,distance][,pattern_map] "
                                          "(3 given: the dense heads take 1)."),
    alpha: float = typer.Option(0.12, "--alpha", help="GradNorm asymmetry alpha."),
    weighting_lr: float = typer.Option(0.025, "--weighting-lr", help="GradNorm weight learning rate."),
    monitor: str = typer.Option("score", "--monitor",
                                help="Best checkpoint by: score | val_loss | dice | pattern_accuracy | ..."),
    patience: int = typer.Option(0, "--patience", help="Early stop after this many epochs without gain (0 = off)."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA (CPU is always fp32)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (or the newest runs/train)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Train with patient-wise k-fold cross-validation; writes checkpoints, metrics, plots and a summary."""
    config_module: Any = import_stage("hep2edge.train.config")  # a missing `train` extra is said first
    run_module: Any = import_stage("hep2edge.train.run")
    config = config_module.TrainConfig(
        data=_data_dirs(data), out=_out_dir(out, resume), manifest=manifest, allow_outside=allow_outside,
        folds_file=folds_file, encoder=encoder, encoder_weights=encoder_weights, in_channels=in_channels,
        channel_policy=channel_policy, decoder_channels=_ints(decoder_channels, "--decoder-channels"),
        arch=arch, attention=attention, instances=instances, pattern_map=pattern_map,
        distance_loss=distance_loss, pattern_map_dice=pattern_map_dice, pool_levels=pool_levels, dropout=dropout,
        tile=tile, normalization=normalization, augment=augment, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, scheduler=scheduler, folds=folds, fold=config_module.parse_fold(fold), seed=seed,
        seg_loss=seg_loss, class_weights=class_weights, label_smoothing=label_smoothing, weighting=weighting,
        task_weights=_floats(task_weights, (3, 3 + instances + pattern_map), "--task-weights"), alpha=alpha,
        weighting_lr=weighting_lr,
        monitor=monitor, patience=patience, amp=amp, device=device, resume=resume, progress=progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        show_resolved("train", config)
    summary = run_module.run_training(config)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(summary)
