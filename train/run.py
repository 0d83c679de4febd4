"""`run_training(config) -> summary.json`: dataset, patient-wise folds, tiles, every fold, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hep2edge.data.manifest import Dataset, load_dataset
from hep2edge.errors import ConfigError
from hep2edge.folds import check_folds_cover, fold_patients, load_folds, make_folds, save_folds
from hep2edge.train.config import TrainConfig
from hep2edge.train.display import Display
from hep2edge.train.distributed import DistContext, barrier, init_distributed, shutdown
from hep2edge.train.loop import FoldResult, FoldTrainer
from hep2edge.train.model import build_model
from hep2edge.train.reports import write_reports
from hep2edge.train.resume import LAST
from hep2edge.train.tiles_dataset import TileSet, build_tile_set
from hep2edge.workspace import write_resolved_config

FOLDS_FILE = "folds.json"


def check_out_dir(config: TrainConfig) -> None:
    """A run folder that already holds a training run needs --resume (never overwrite it silently)."""
    started = sorted(config.out.glob(f"fold_*/{LAST}"))
    if started and not config.resume:
        raise ConfigError(f"{config.out}: already holds a training run ({started[0].parent.name}/{LAST}); "
                          "pass --resume to continue it or choose another --out")


def resolve_folds(config: TrainConfig, dataset: Dataset, ctx: DistContext) -> tuple[dict[str, int], Path]:
    """Folds from --folds-file, else from this run's folds.json (resume), else made now and saved."""
    path = config.folds_file or config.out / FOLDS_FILE
    if config.folds_file is not None or path.is_file():
        folds = load_folds(path)
        check_folds_cover(folds, dataset.records, str(path))
        found = max(folds.values()) + 1
        if found != config.folds:
            raise ConfigError(f"{path}: holds {found} folds but --folds is {config.folds}")
        return folds, path.resolve()
    folds = make_folds(dataset.records, config.folds, config.seed)
    if ctx.is_main:
        save_folds(path, folds, {"k": config.folds, "seed": config.seed, "dataset": str(dataset.root.resolve())})
    barrier(ctx)
    return folds, path.resolve()


def load_tiles(config: TrainConfig, dataset: Dataset, display: Display) -> TileSet:
    """Read and cut every image once (uint8/uint16 tiles in memory)."""
    with display.bar(f"reading {len(dataset.records)} images", len(dataset.records)) as advance:
        tiles = build_tile_set(dataset.records, config.tile, config.channel_policy, config.in_channels,
                               on_image=lambda _n: advance(1))
    display.log(f"{len(dataset.records)} images -> {len(tiles)} tiles of {config.tile} px "
                f"({tiles.images.nbytes / 2**20:.0f} MiB)")
    return tiles


def data_info(config: TrainConfig, dataset: Dataset, folds_path: Path, train: list[str], val: list[str]) -> dict[str, Any]:
    """What export needs to draw calibration (train) and verification (val) tiles again."""
    return {
        "root": str(dataset.root.resolve()),
        "manifest": str(dataset.manifest.resolve()),
        "folds_file": str(folds_path),
        "train_patients": list(train),
        "val_patients": list(val),
        "channel_policy": config.channel_policy,
    }


def train_folds(config: TrainConfig, ctx: DistContext, display: Display) -> tuple[list[FoldResult], dict[str, int]]:
    dataset = load_dataset(config.data, config.manifest)
    folds, folds_path = resolve_folds(config, dataset, ctx)
    tiles = load_tiles(config, dataset, display)
    results = []
    for fold in config.fold_indices():
        train_patients, val_patients = fold_patients(folds, fold)
        train, val = tiles.subset(tiles.patients_mask(train_patients)), tiles.subset(tiles.patients_mask(val_patients))
        display.log(f"fold {fold}: {len(train_patients)} training patients ({len(train)} tiles), "
                    f"{len(val_patients)} held-out patients ({len(val)} tiles)")
        info = data_info(config, dataset, folds_path, train_patients, val_patients)
        results.append(FoldTrainer(config, ctx, fold, train, val, info, display).run())
    return results, folds


def run_training(config: TrainConfig, display: Display | None = None) -> Path:
    """Train the folds asked for; returns the path of `summary.json` in `config.out`."""
    ctx = init_distributed(config.device)
    config = config.replace(out=Path(config.out))
    display = display or Display()
    display = Display(main=ctx.is_main, bars=display.bars and config.progress, console=display.console)
    try:
        check_out_dir(config)
        build_model(config.model_config, config.encoder_weights)  # fail fast: weights file, offline imagenet
        if ctx.is_main:
            config.out.mkdir(parents=True, exist_ok=True)
            write_resolved_config(config.out, config)
        torch.set_float32_matmul_precision("high")
        results, _ = train_folds(config, ctx, display)
        summary = config.out / "summary.json"
        if ctx.is_main:
            write_reports(config, results, ctx.world_size)
        barrier(ctx)
        return summary
    finally:
        shutdown(ctx)
