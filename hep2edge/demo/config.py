"""What `hep2edge demo` runs: one frozen config, written next to its outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hep2edge.errors import ConfigError
from hep2edge.runtime.settings import INFERENCE_MODES

DEMO_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so the whole demo runs in under 10 minutes on 2 CPU cores.

    Training data: `patients` x `images_per_patient` synthetic fields of `size` (H, W), cut into `tile` px
    tiles; one fold of a patient-wise 5-fold split is trained, with the distance head (`instances`: cells split by
    watershed) and the per-pixel pattern head (`pattern_map`: each cell's pattern). Fresh data: `fresh_patients`
    new patients (another seed) of full-size fields, dropped one by one into a watched folder like a scanner
    would; `inference` is how the watch runs the network on them (`--inference tiles|field`).
    """

    out: Path | None = None  # None: the next runs/demo/<n>
    patients: int = 40
    images_per_patient: int = 4
    size: tuple[int, int] = (256, 256)
    tile: int = 128
    encoder: str = "mobilenet_v2"
    # the last stages 32/16 wide, not 16/8: the dense heads (distance, 8-class pattern map) share them
    # (bench_cells, 16 epochs: AJI 0.39 -> 0.48, cell-pattern mIoU 0.27 -> 0.39)
    decoder_channels: tuple[int, ...] = (64, 32, 32, 16, 16)
    pool_levels: int = 3
    instances: bool = True  # train --instances: the distance head, so the watch finds cells by watershed
    pattern_map: bool = True  # train --pattern-map: the per-pixel pattern head, so each cell gets a pattern
    epochs: int = 16
    batch_size: int = 16
    lr: float = 1e-3
    folds: int = 5
    calib_images: int = 32
    val_images: int = 32  # all held-out images of the default split: 128 tiles, one tile = 0.008
    fresh_patients: int = 7
    fresh_images_per_patient: int = 2
    fresh_size: tuple[int, int] = (1040, 1388)
    drop_interval_s: float = 1.0  # about one field per second, like a slide scanner
    # watch --inference: "tiles" (overlapping tiles) or "field" (the whole field in one pass, runtime/field.py).
    # The demo uses whichever is the faster CPU path, as measured; set it here and nowhere else.
    inference: str = "tiles"
    device: str = "auto"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.patients >= self.folds, f"`patients` {self.patients}: need at least `folds` ({self.folds})"),
            (self.epochs >= 1, f"`epochs` must be >= 1, got {self.epochs}"),
            (self.fresh_patients >= 1, f"`fresh_patients` must be >= 1, got {self.fresh_patients}"),
            (self.fresh_images_per_patient >= 1,
             f"`fresh_images_per_patient` must be >= 1, got {self.fresh_images_per_patient}"),
            (self.drop_interval_s >= 0, f"--drop-interval must be >= 0 s, got {self.drop_interval_s}"),
            (min(self.size) >= self.tile // 2, f"`size` {self.size}: too small for {self.tile} px tiles"),
            (self.inference in INFERENCE_MODES,
             f"inference {self.inference!r}: valid modes are {', '.join(INFERENCE_MODES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def fresh_images(self) -> int:
        return self.fresh_patients * self.fresh_images_per_patient

    def replace(self, **changes: object) -> DemoConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
