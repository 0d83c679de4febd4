"""`run_training(config) -> summary.json`: dataset, patient-wise folds, tiles, every fold, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hep2edge.data.cells import load_cell_classes
from hep2edge.data.combined import Datasets, load_datasets
from hep2edge.errors import ConfigError, DataError
from hep2edge.folds import check_folds_cover, fold_patients, load_folds, make_folds, save_folds
from hep2edge.progress import SILENT, Reporter
from hep2edge.train.config import TrainConfig
from hep2edge.train.display import Display
from hep2edge.train.distributed import DistContext, barrier, init_distributed, shutdown
from hep2edge.train.loop import FoldResult, FoldTrainer
from hep2edge.train.model import build_model
from hep2edge.train.reports import write_reports
from hep2edge.train.resume import LAST
from hep2edge.train.targets import CellClasses, DenseNeeds
from hep2edge.train.tiles_dataset import TileSet, build_tile_set, require_masks
from hep2edge.workspace import resolve_out_dir, write_resolved_config

FOLDS_FILE = "folds.json"


def check_out_dir(out: Path, resume: bool) -> None:
    """A run folder that already holds a training run needs `resume` (never overwrite it silently)."""
    started = sorted(out.glob(f"fold_*/{LAST}"))
    if started and not resume:
        raise ConfigError(f"{out}: already holds a training run ({started[0].parent.name}/{LAST}); "
                          "pass `resume` to continue it or choose another `out`")


def resolve_folds(config: TrainConfig, dataset: Datasets, ctx: DistContext) -> tuple[dict[str, int], Path]:
    """Folds from `folds_file`, else from this run's folds.json (resume), else made now and saved."""
    path = config.folds_file or config.run_dir / FOLDS_FILE
    barrier(ctx)  # every process looks for the file before rank 0 may write it
    if config.folds_file is not None or path.is_file():
        folds = load_folds(path)
        check_folds_cover(folds, dataset.records, str(path))
        found = max(folds.values()) + 1
        if found != config.folds:
            raise ConfigError(f"{path}: holds {found} folds but `folds` is {config.folds}")
    else:
        folds = make_folds(dataset.records, config.folds, config.seed)
        if ctx.is_main:
            save_folds(path, folds, {"k": config.folds, "seed": config.seed,
                                     "dataset": dataset.describe()})
    barrier(ctx)
    return folds, path.resolve()


def cell_classes(config: TrainConfig, dataset: Datasets) -> list[CellClasses] | None:
    """Per record (in dataset.records order) its cells.csv classes, for the pattern map; None without that head."""
    if not config.pattern_map:
        return None
    found: list[CellClasses] = []
    for part in dataset.parts:
        classes = load_cell_classes(part.root, part.records, config.allow_outside)
        found += [classes.get(record.image.stem, {}) for record in part.records]
    return found


def load_tiles(config: TrainConfig, dataset: Datasets, display: Display) -> TileSet:
    """Read and cut every image once (uint8/uint16 tiles in memory; with dense heads their targets too)."""
    dense = DenseNeeds(distance=config.instances, pattern_map=config.pattern_map)
    classes = cell_classes(config, dataset)
    with display.bar(f"reading {len(dataset.records)} images", len(dataset.records)) as advance:
        tiles = build_tile_set(dataset.records, config.tile, config.channel_policy, config.in_channels,
                               on_image=lambda _n: advance(1), dense=dense, cell_classes=classes)
    extra = sum(a.nbytes for a in (tiles.instances, tiles.distance, tiles.classes) if a is not None)
    display.say(f"{len(dataset.records)} images -> {len(tiles)} tiles of {config.tile} px "
                f"({tiles.images.nbytes / 2**20:.0f} MiB" + (f", targets {extra / 2**20:.0f} MiB)" if extra else ")"))
    return tiles


def data_info(
    config: TrainConfig, dataset: Datasets, folds_path: Path, train: list[str], val: list[str]
) -> dict[str, Any]:
    """What export needs to draw calibration (train) and verification (val) tiles again."""
    return {
        **dataset.location(),
        "allow_outside": config.allow_outside,
        "folds_file": str(folds_path),
        "train_patients": list(train),
        "val_patients": list(val),
        "channel_policy": config.channel_policy,
    }


def train_folds(config: TrainConfig, ctx: DistContext, dataset: Datasets, tiles: TileSet,
                display: Display) -> tuple[list[FoldResult], dict[str, int]]:
    folds, folds_path = resolve_folds(config, dataset, ctx)
    results = []
    for fold in config.fold_indices():
        train_patients, val_patients = fold_patients(folds, fold)
        train, val = tiles.subset(tiles.patients_mask(train_patients)), tiles.subset(tiles.patients_mask(val_patients))
        display.say(f"fold {fold}: {len(train_patients)} training patients ({len(train)} tiles), "
                    f"{len(val_patients)} held-out patients ({len(val)} tiles)")
        info = data_info(config, dataset, folds_path, train_patients, val_patients)
        results.append(FoldTrainer(config, ctx, fold, train, val, info, display).run())
    return results, folds


def require_all_masks(dataset: Datasets) -> None:
    """require_masks for every folder, their refusals reported together (one line per folder)."""
    errors = []
    for part in dataset.parts:
        try:
            require_masks(part.records, str(part.manifest))
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        raise DataError("\n".join(errors))


def prepare(config: TrainConfig) -> Datasets:
    """Check the inputs that need no decoding: run folder, manifests, masks, fold count, encoder weights."""
    if config.out is not None:
        check_out_dir(config.out, config.resume)
    dataset = load_datasets(config.data_dirs, config.manifest, allow_outside=config.allow_outside)
    require_all_masks(dataset)
    if config.folds_file is None:
        make_folds(dataset.records, config.folds, config.seed)  # too few patients for `folds` fails here
    build_model(config.model_config, config.encoder_weights)  # fails fast: weights file, offline imagenet
    return dataset


def open_run_dir(config: TrainConfig, ctx: DistContext) -> TrainConfig:
    """The run folder (`out`, else the next runs/train/<n>) with the resolved config written in it."""
    if config.out is None:
        config = config.replace(out=resolve_out_dir(None, "train"))
    if ctx.is_main:
        resolve_out_dir(config.run_dir, "train")
        write_resolved_config(config.run_dir, config)
    return config


def run_training(config: TrainConfig, reporter: Reporter = SILENT) -> Path:
    """Train the folds asked for, telling `reporter` (the main process only); returns the path of `summary.json`."""
    ctx = init_distributed(config.device)
    display = Display(reporter, main=ctx.is_main, bars=config.progress)
    try:
        dataset = prepare(config)
        tiles = load_tiles(config, dataset, display)  # every image decoded before anything is written
        config = open_run_dir(config, ctx)
        display.say(f"run folder {config.run_dir}")
        results, _ = train_folds(config, ctx, dataset, tiles, display)
        if ctx.is_main:
            write_reports(config, results, ctx.world_size)
        barrier(ctx)
        return config.run_dir / "summary.json"
    finally:
        shutdown(ctx)
