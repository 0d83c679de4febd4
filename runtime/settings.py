"""The runtime's settings, stated once: mode names and the frozen configs a run is built from.

Dependency-free (no numpy, cv2 or backend library), so the CLI builds its options from it without importing
the runtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hep2edge.errors import ConfigError
from hep2edge.limits import MAX_FILE_BYTES, MAX_PIXELS

if TYPE_CHECKING:
    from hep2edge.contract import ModelContract

INFERENCE_MODES = ("tiles", "field")  # runtime/field.py
CELL_MODES = ("auto", "distance", "components", "off")  # runtime/cells.py
CELL_KERNELS = ("auto", "numba", "numpy")  # hep2edge.cell_kernels.kernel_choices() (a test keeps them equal)
PREPROCESS_MODES = ("auto", "host", "cuda")  # runtime/executors.py
MASK_STITCHERS = ("majority", "or")
SPECIMEN_METHODS = ("vote", "mean", "cells")  # cells: the pattern most cells of the specimen's images carry
I3A_SPECIMEN = r"^(\d{5})_p\d+"
DEVICES = ("auto", "cpu", "cuda", "gpu", "npu")  # gpu / npu: an Intel GPU or NPU, through OpenVINO
TORCH_PRECISIONS = ("fp32", "fp16")
PRECISION_HINTS = ("auto", "f32", "bf16")  # OpenVINO: what it computes unquantized layers in (auto: bf16 if native)
DEFAULT_MAX_BATCH = 32
MAX_INFLIGHT_BYTES = 1 << 30


def check_torch_precision(precision: str) -> None:
    """ConfigError unless `precision` is one the torch backend runs a checkpoint at."""
    if precision not in TORCH_PRECISIONS:
        raise ConfigError(f"`torch_precision` {precision}: valid: {', '.join(TORCH_PRECISIONS)}")



def check_choice(param: str, value: str, choices: tuple[str, ...], kind: str = "modes") -> None:
    """ConfigError "`param` value: valid <kind> are a, b, c" unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"`{param}` {value}: valid {kind} are {', '.join(choices)}")

@dataclass(frozen=True)
class BackendConfig:
    """How to open a model: the file, the largest batch of tiles per call, the device preference.

    A TensorRT engine or ONNX file carries its precision; a checkpoint (torch) runs at `torch_precision`, in
    `channels_last` memory format if asked: fp16 + channels_last + `cuda_graph` is the engine's GPU stand-in.
    """

    model: Path
    max_batch: int = DEFAULT_MAX_BATCH
    device: str = "auto"  # auto | cpu | cuda
    cuda_graph: bool = False  # TensorRT and torch on CUDA: replay captured graphs instead of launching kernels
    torch_precision: str = "fp32"  # torch only: fp32 | fp16
    channels_last: bool = False  # torch only: NHWC memory format
    inference_precision: str = "auto"  # openvino only: auto | f32 | bf16

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max batch must be at least 1, got {self.max_batch}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device '{self.device}'; valid: {', '.join(DEVICES)}")
        check_torch_precision(self.torch_precision)
        if self.inference_precision not in PRECISION_HINTS:
            raise ConfigError(f"--precision-hint {self.inference_precision}: valid: {', '.join(PRECISION_HINTS)}")


@dataclass(frozen=True)
class PipelineConfig:
    readers: int = 2
    writers: int = 2
    queue_size: int = 8
    max_batch: int = DEFAULT_MAX_BATCH
    batch_wait_ms: float = 2.0  # how long the GPU thread waits for another frame to fill a batch
    table_interval_s: float = 1.0  # results.csv trails the journal by at most this (plus one regeneration)
    table_cost_share: float = 0.25  # ... or longer, so that regenerating a large table takes at most this share

    def __post_init__(self) -> None:
        for name in ("readers", "writers", "queue_size", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class StageConfig:
    """Per-input settings of the reader and writer stages."""

    channel_policy: str = "luminance"
    retry_failed: bool = False
    max_file_bytes: int = MAX_FILE_BYTES
    max_pixels: int = MAX_PIXELS
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    stitch: str = "majority"
    cells: str = "auto"  # CELL_MODES
    cell_kernels: str = "auto"  # CELL_KERNELS
    tile_overlap: int = 0  # px, least overlap of neighbouring tiles (0: the fewest tiles); below the model's tile

    def __post_init__(self) -> None:
        # checked here, before any input: found per image it would fail (and journal) every input
        check_choice("stitch", self.stitch, MASK_STITCHERS, "methods")
        check_choice("cells", self.cells, CELL_MODES)
        check_choice("cell_kernels", self.cell_kernels, CELL_KERNELS, "kernels")
        if isinstance(self.tile_overlap, bool) or not isinstance(self.tile_overlap, int) or self.tile_overlap < 0:
            raise ConfigError(f"`tile_overlap` must be a whole number of pixels >= 0, got {self.tile_overlap!r}")


@dataclass(frozen=True)
class SpecimenConfig:
    """`pattern`: regex on the file stem whose group 1 is the specimen id (no match = no specimen)."""

    pattern: str = I3A_SPECIMEN
    images: int = 4
    method: str = "vote"

    def __post_init__(self) -> None:
        if self.method not in SPECIMEN_METHODS:
            raise ConfigError(f"unknown specimen method '{self.method}'; valid: {', '.join(SPECIMEN_METHODS)}")
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"--specimen-pattern {self.pattern!r}: invalid regular expression ({exc})") from exc
        if compiled.groups < 1:
            raise ConfigError(f"--specimen-pattern {self.pattern!r}: needs one group, the specimen id")
        if self.images < 1:
            raise ConfigError(f"--specimen-images must be at least 1, got {self.images}")

    def specimen_of(self, name: str) -> str:
        match = re.match(self.pattern, name)
        return match.group(1) if match else ""


def check_run_options(device: str, channel: str | None, preprocess: str, inference: str = "tiles") -> None:
    """ConfigError for an unknown `device`, `channel`, `preprocess` or `inference`, before RESULTS is touched."""
    check_choice("inference", inference, INFERENCE_MODES)
    check_choice("device", device, DEVICES, "devices")
    check_choice("preprocess", preprocess, PREPROCESS_MODES)
    if channel is not None:
        from hep2edge.imageio import CHANNEL_POLICIES  # cv2: imported only when a channel is named

        CHANNEL_POLICIES.get(channel)  # unknown names fail listing the valid ones


def check_backend_options(backend: str, device: str, torch_precision: str, channels_last: bool,
                          inference_precision: str) -> None:
    """ConfigError for options the chosen backend does not take (checked before RESULTS is created)."""
    check_torch_precision(torch_precision)
    if backend != "torch" and (torch_precision != "fp32" or channels_last):
        raise ConfigError(f"`torch_precision` and `channels_last` apply to a checkpoint (torch backend); "
                          f"{backend} runs a model at the precision it was exported with")
    if backend != "openvino" and (inference_precision != "auto" or device in ("gpu", "npu")):
        raise ConfigError(f"--precision-hint and --device gpu|npu are OpenVINO's; {backend} takes "
                          "--device auto|cpu|cuda")


@dataclass(frozen=True)
class RunConfig:
    """Everything `analyze` / `watch` / `camera` resolved from their options."""

    command: str
    out: Path
    model: Path
    backend: str
    model_reason: str = ""
    device: str = "auto"
    channel: str | None = None  # None: the contract's channel policy
    preprocess: str = "auto"  # host | cuda | auto
    inference: str = "tiles"  # tiles | field (runtime/field.py)
    cuda_graph: bool = False
    torch_precision: str = "fp32"  # torch backend only (a checkpoint); engines and ONNX carry their precision
    channels_last: bool = False  # torch backend only
    inference_precision: str = "auto"  # openvino backend only
    overlay: bool = False
    instance_labels: bool = False  # <stem>_instances.png where cells are analysed
    retry_failed: bool = False
    stage: StageConfig = field(default_factory=StageConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    specimens: SpecimenConfig = field(default_factory=SpecimenConfig)
    source: dict[str, Any] = field(default_factory=dict)  # the source's own settings, for config.yaml

    def __post_init__(self) -> None:
        check_run_options(self.device, self.channel, self.preprocess, self.inference)
        check_backend_options(self.backend, self.device, self.torch_precision, self.channels_last,
                              self.inference_precision)

    def channel_policy(self, contract: ModelContract) -> str:
        """`channel` if given, else the model contract's policy."""
        return self.channel or contract.channel_policy

    def backend_config(self) -> BackendConfig:
        return BackendConfig(self.model, self.pipeline.max_batch, self.device, self.cuda_graph,
                             self.torch_precision, self.channels_last, self.inference_precision)
