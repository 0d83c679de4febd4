"""Typed configuration of the export stage and the parsers for its option strings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hep2edge.errors import ConfigError

CALIBRATION_METHODS = ("entropy", "max")
HIGH_PRECISION_DTYPES = ("fp16", "fp32")
# names of the rules in hep2edge.export.int8.quantize.EXCLUSIONS (kept here so the CLI can check them cheaply)
INT8_EXCLUSION_RULES = ("depthwise", "heads", "se", "sigmoid-mul")
DEFAULT_BATCH = (1, 8, 16)


DEFAULT_FIELD = (1040, 1388)  # the I3A / scanner field (H, W): the whole-field profile's largest input


@dataclass(frozen=True)
class BatchProfile:
    """The TensorRT optimization profiles: tile batch sizes (min <= opt <= max) and, for a whole-field model,
    a second profile of one field up to `field` (H, W; None: no whole-field profile)."""

    min: int = DEFAULT_BATCH[0]
    opt: int = DEFAULT_BATCH[1]
    max: int = DEFAULT_BATCH[2]
    field: tuple[int, int] | None = DEFAULT_FIELD

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"--batch {self.min},{self.opt},{self.max}: need 1 <= MIN <= OPT <= MAX")
        if self.field is not None and (len(self.field) != 2 or min(self.field) < 1):
            raise ConfigError(f"--field-size {self.field}: expected HEIGHTxWIDTH in pixels, or none")

    def shapes(self, channels: int, tile: int) -> dict[str, tuple[int, int, int, int]]:
        """{'min'|'opt'|'max': (N, C, t, t)} input shapes of the profile."""
        sizes = (("min", self.min), ("opt", self.opt), ("max", self.max))
        return {name: (n, channels, tile, tile) for name, n in sizes}

    def field_shapes(self, channels: int, tile: int, stride: int) -> dict[str, tuple[int, int, int, int]] | None:
        """The whole-field profile: one field from a tile up to `field` padded to `stride`; None without one."""
        if self.field is None:
            return None
        height, width = (max(tile, -(-side // stride) * stride) for side in self.field)
        return {"min": (1, channels, tile, tile), "opt": (1, channels, height, width),
                "max": (1, channels, height, width)}


@dataclass(frozen=True)
class Int8Options:
    """ModelOpt ONNX PTQ settings (per-channel weights always; Sigmoid/Softmax are never quantized)."""

    calib_method: str = "max"  # entropy clipped ReLU6 ranges of a mobilenet_v2 U-Net: export/int8/STUDY.md
    calib_images: int = 32
    # fp16: the non-quantized layers run in fp16 in the strongly typed TensorRT engine (what the
    # target wants); fp32 makes the Q/DQ graph faster under ONNX Runtime CPU but slower on the GPU.
    high_precision: str = "fp16"
    exclude_rules: tuple[str, ...] = ()  # named rules: depthwise, heads, se, sigmoid-mul
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()  # regular expressions on ONNX node names
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calib_method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"--calib-method {self.calib_method}: valid methods are {', '.join(CALIBRATION_METHODS)}"
            )
        if self.high_precision not in HIGH_PRECISION_DTYPES:
            raise ConfigError(
                f"--int8-high-precision {self.high_precision}: valid: {', '.join(HIGH_PRECISION_DTYPES)}"
            )
        unknown = [r for r in self.exclude_rules if r not in INT8_EXCLUSION_RULES]
        if unknown:
            raise ConfigError(
                f"--int8-exclude {unknown[0]}: valid rules are {', '.join(INT8_EXCLUSION_RULES)}"
            )
        for pattern in self.exclude_nodes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"--int8-exclude-nodes {pattern!r}: not a regular expression ({exc})") from exc
        if self.calib_images < 1:
            raise ConfigError(f"--calib-images {self.calib_images}: need at least 1 calibration image")


@dataclass(frozen=True)
class Limits:
    """How much a precision may lose against PyTorch fp32 before export fails."""

    fp32_rel_error: float = 1e-4
    dice_drop: float = 0.01
    accuracy_drop: float = 0.02
    aji_drop: float = 0.02  # per-cell AJI and pattern-map mIoU: only for a model with dense heads
    miou_drop: float = 0.02

    def task_drops(self) -> dict[str, float]:
        """The largest drop allowed per patch-level task metric (Dice, pattern and intensity accuracy)."""
        accuracy = self.accuracy_drop
        return {"dice": self.dice_drop, "pattern_accuracy": accuracy, "intensity_accuracy": accuracy}


@dataclass(frozen=True)
class ExportConfig:
    """Everything `hep2edge export` needs; written next to the outputs as config.yaml."""

    checkpoint: Path | None = None  # None: best checkpoint of the newest runs/train/<n>
    out: Path | None = None  # None: the next runs/export/<n>
    precisions: tuple[str, ...] = ("fp32",)
    calib_data: Path | None = None
    val_data: Path | None = None
    val_images: int = 8
    int8: Int8Options = field(default_factory=Int8Options)
    limits: Limits = field(default_factory=Limits)
    batch: BatchProfile = field(default_factory=BatchProfile)
    engine: bool = False
    workspace_gib: float = 4.0
    opset: int = 17
    simplify: bool = True
    field_check: bool = True  # score the fp32 file in whole-field mode against its tiles (export/field_check.py)
    verify_batch: int = 8

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ConfigError(f"--opset {self.opset}: the export needs opset 17 or newer")
        if self.workspace_gib <= 0:
            raise ConfigError(f"--workspace {self.workspace_gib}: must be a positive number of GiB")
        if self.val_images < 1:
            raise ConfigError(f"--val-images {self.val_images}: need at least 1 validation image")


def parse_precisions(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """['fp16,int8', 'fp32'] -> ('fp32', 'fp16', 'int8'): repeatable or comma-separated, fp32 always first."""
    from hep2edge.contract import PRECISION_NAMES  # here: the contract brings numpy, and the CLI imports this module

    names: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in PRECISION_NAMES:
                raise ConfigError(f"--precision {name}: valid precisions are {', '.join(PRECISION_NAMES)}")
            if name not in names:
                names.append(name)
    return tuple(p for p in PRECISION_NAMES if p in names or p == "fp32")


def parse_field_size(text: str | None) -> tuple[int, int] | None:
    """'1040x1388' -> (1040, 1388); 'none' -> None (no whole-field profile); empty -> the default field."""
    if text is None or str(text).strip() == "":
        return DEFAULT_FIELD
    if str(text).strip().lower() == "none":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise ConfigError(f"--field-size {text}: expected HEIGHTxWIDTH (e.g. 1040x1388) or none")
    return int(match.group(1)), int(match.group(2))


def parse_batch(text: str | None, field_size: str | None = None) -> BatchProfile:
    """'1,8,16' -> BatchProfile(1, 8, 16); a single number N means N,N,N. `field_size`: see parse_field_size."""
    field_profile = parse_field_size(field_size)
    if text is None or str(text).strip() == "":
        return BatchProfile(field=field_profile)
    try:
        numbers = [int(part) for part in str(text).split(",")]
    except ValueError as exc:
        raise ConfigError(f"--batch {text}: expected MIN,OPT,MAX (three integers)") from exc
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3:
        raise ConfigError(f"--batch {text}: expected MIN,OPT,MAX (three integers)")
    return BatchProfile(numbers[0], numbers[1], numbers[2], field=field_profile)


def parse_names(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Repeatable or comma-separated names -> tuple, order kept, duplicates dropped."""
    names: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            if part.strip() and part.strip() not in names:
                names.append(part.strip())
    return tuple(names)
