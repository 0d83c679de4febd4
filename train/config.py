"""The training configuration: one frozen dataclass, checked once, written next to every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hep2edge.data.combined import check_roots
from hep2edge.errors import ConfigError
from hep2edge.imageio import channel_policy_names
from hep2edge.normalization import MODES as NORMALIZATION_MODES
from hep2edge.train.archs import arch_problem, encoder_problem
from hep2edge.train.losses import DISTANCE_LOSSES, SEG_LOSSES
from hep2edge.train.model import ModelConfig
from hep2edge.train.settings import TrainSettings
from hep2edge.train.weighting import WEIGHTINGS

SCHEDULERS = ("cosine", "plateau", "none")
MONITORS = ("score", "val_loss", "dice", "pattern_accuracy", "pattern_mca", "intensity_accuracy", "aji", "pq",
            "miou")
CELL_MONITORS = ("aji", "pq", "miou")  # need a dense head (miou: the pattern map)
TASKS = ("mask", "pattern", "intensity")  # always trained
DENSE_TASKS = ("distance", "pattern_map")  # optional: instances, pattern_map


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """Everything one `hep2edge train` run needs (the fields: TrainSettings), checked once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _data_field(self.data))
        object.__setattr__(self, "task_weights", tuple(float(w) for w in self.task_weights))
        check_roots(self.data_dirs, self.manifest)
        arch = arch_problem(self.arch, self.attention, self.tile, tuple(self.decoder_channels))
        encoder = encoder_problem(self.encoder)  # smp decides: its own names and timm's (`tu-...`)
        checks = [
            (not arch, arch),
            (self.seg_loss in SEG_LOSSES.names(),
             f"`seg_loss` {self.seg_loss}: valid: {', '.join(SEG_LOSSES.names())}"),
            (self.weighting in WEIGHTINGS.names(),
             f"`weighting` {self.weighting}: valid: {', '.join(WEIGHTINGS.names())}"),
            (self.scheduler in SCHEDULERS, f"`scheduler` {self.scheduler}: valid: {', '.join(SCHEDULERS)}"),
            (self.monitor in MONITORS, f"`monitor` {self.monitor}: valid: {', '.join(MONITORS)}"),
            (self.normalization in NORMALIZATION_MODES,
             f"`normalization` {self.normalization}: valid: {', '.join(NORMALIZATION_MODES)}"),
            (not encoder, encoder),
            (len(self.decoder_channels) == 5 and all(c > 0 for c in self.decoder_channels),
             f"`decoder_channels` needs 5 positive widths, got {list(self.decoder_channels)}"),
            (self.channel_policy in channel_policy_names(),
             f"`channel_policy` {self.channel_policy}: valid: {', '.join(channel_policy_names())}"),
            (self.in_channels in (1, 3), f"`in_channels` must be 1 or 3, got {self.in_channels}"),
            (self.tile >= 32 and self.tile % 32 == 0, f"`tile` must be a multiple of 32 (>= 32), got {self.tile}"),
            (self.epochs >= 1, f"`epochs` must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"`batch_size` must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"`lr` must be positive, got {self.lr}"),
            (self.folds >= 2, f"`folds` must be >= 2, got {self.folds}"),
            (self.fold is None or 0 <= self.fold < self.folds,
             f"`fold` must be 'all' or 0-{self.folds - 1}, got {self.fold}"),
            (0.0 <= self.label_smoothing < 1.0, f"`label_smoothing` must be in [0, 1), got {self.label_smoothing}"),
            (0.0 <= self.dropout < 1.0, f"`dropout` must be in [0, 1), got {self.dropout}"),
            (len(self.task_weights) in (3, len(self.tasks)) and all(w >= 0 for w in self.task_weights)
             and sum(self.task_weights) > 0,
             f"`task_weights` needs {' or '.join(sorted({'3', str(len(self.tasks))}))} non-negative numbers "
             f"({' '.join(self.tasks)}), got {list(self.task_weights)}"),
            (self.distance_loss in DISTANCE_LOSSES.names(),
             f"`distance_loss` {self.distance_loss}: valid: {', '.join(DISTANCE_LOSSES.names())}"),
            (self.monitor not in CELL_MONITORS or self.instances or self.pattern_map,
             f"`monitor` {self.monitor} needs `instances` or `pattern_map`"),
            (self.monitor != "miou" or self.pattern_map, "`monitor` miou needs `pattern_map`"),
            (self.seed >= 0, f"`seed` must be >= 0, got {self.seed}"),
            (self.alpha >= 0, f"`alpha` must be >= 0, got {self.alpha}"),
            (self.patience >= 0, f"`patience` must be >= 0 (0 = no early stopping), got {self.patience}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def data_dirs(self) -> tuple[Path, ...]:
        """The dataset folders, in the order given."""
        return self.data if isinstance(self.data, tuple) else (self.data,)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(
            encoder=self.encoder,
            in_channels=self.in_channels,
            pool_levels=self.pool_levels,
            dropout=self.dropout,
            decoder_channels=tuple(self.decoder_channels),
            arch=self.arch,
            attention=None if self.attention == "none" else self.attention,
            distance=self.instances,
            pattern_map=self.pattern_map,
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        """The trained tasks in loss order: mask, pattern, intensity[, distance][, pattern_map]."""
        return (*TASKS, *("distance",) * self.instances, *("pattern_map",) * self.pattern_map)

    @property
    def cell_metrics(self) -> bool:
        """Whether validation scores cells (AJI, PQ, ...; mIoU with the pattern map): a dense head is on."""
        return self.instances or self.pattern_map

    @property
    def weights(self) -> tuple[float, ...]:
        """One initial / fixed weight per task of `tasks` (dense heads 1.0 when only 3 were given)."""
        return self.task_weights + (1.0,) * (len(self.tasks) - len(self.task_weights))

    @property
    def run_dir(self) -> Path:
        """The resolved run folder (`out` once run_training has chosen it)."""
        if self.out is None:
            raise ConfigError("internal: the run folder is not resolved yet")
        return Path(self.out)

    def fold_indices(self) -> list[int]:
        return list(range(self.folds)) if self.fold is None else [self.fold]

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def resume_key(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in _NOT_KEY}

    @staticmethod
    def key_defaults() -> dict[str, Any]:
        """resume_key values of the defaults: what a run saved before a field existed had in effect."""
        return {f.name: _plain(f.default) for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING and f.name not in _NOT_KEY}


_NOT_KEY = frozenset({"resume", "progress", "out", "device", "allow_outside"})  # may change on `resume`


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _data_field(value: Any) -> Path | tuple[Path, ...]:
    """One folder as a Path (as before several were allowed), several as a tuple of Paths."""
    if isinstance(value, (list, tuple)):
        paths = tuple(Path(v) for v in value)
        return paths[0] if len(paths) == 1 else paths
    return Path(value)


def parse_fold(value: str | int | None) -> int | None:
    """'all' / None -> None; '3' -> 3; anything else -> ConfigError."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"`fold` must be 'all' or a fold number, got {value!r}") from None
