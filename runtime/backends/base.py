"""The one backend interface (Polygraphy's runner shape) and the contract checks every backend shares.

A backend turns an (N, C, t, t) float32 batch of normalised tiles into the model's three outputs,
already activated: mask (N, 1, t, t) probability, pattern (N, 7) probabilities, intensity (N, 1) P(positive).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from hep2edge.contract import FIELD_OUTPUTS, OUTPUTS, ModelContract
from hep2edge.errors import ConfigError, ContractError
from hep2edge.runtime.settings import BackendConfig

OUTPUT_NAMES: tuple[str, ...] = tuple(OUTPUTS)
FIELD_NAMES: tuple[str, ...] = ("mask", *FIELD_OUTPUTS)  # what a whole-field pass reads
FIX = "re-export it with `hep2edge export`"


def gpu_present() -> bool:
    """A CUDA device node exists (desktop driver or Jetson), checked without importing any CUDA library."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvhost-ctrl", "/dev/nvgpu"))


class Backend(ABC):
    """Runs one model. Use as a context manager: `with backend: backend.infer(batch)`."""

    name: str = "backend"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._contract: ModelContract | None = None
        self._max_batch = config.max_batch
        self.active = False

    @property
    def contract(self) -> ModelContract:
        if self._contract is None:
            raise RuntimeError(f"{self.name} backend: activate() before reading the contract")
        return self._contract

    @property
    def max_batch(self) -> int:
        """Largest number of tiles one `infer` call accepts."""
        return self._max_batch

    @property
    def precision(self) -> str:
        return self.contract.precision

    def describe(self) -> str:
        """One line naming the backend, the model file and where it runs."""
        return f"{self.name} on {self.device_name()} ({self.config.model.name}, {self.precision})"

    def device_name(self) -> str:
        return "cpu"

    def activate(self) -> None:
        """Load the model and check its contract; idempotent."""
        if not self.active:
            self._contract = self._load()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._release()
            self.active = False

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(N, C, t, t) float32, N <= max_batch -> {"mask", "pattern", "intensity"} float32 arrays."""
        if not self.active:
            raise RuntimeError(f"{self.name} backend: activate() before infer()")
        check_batch(batch, self.contract, self.max_batch)
        outputs = self._infer(np.ascontiguousarray(batch, dtype=np.float32))
        return check_outputs(outputs, len(batch), self.contract, str(self.config.model), self.tile_outputs)

    @property
    def tile_outputs(self) -> tuple[str, ...]:
        """What `infer` returns: mask, pattern, intensity and the model's per-cell dense heads."""
        return OUTPUT_NAMES + self.contract.cell_outputs

    @property
    def field_outputs(self) -> tuple[str, ...]:
        """What `infer_field` returns: the mask, the heads' maps and the model's per-cell dense heads."""
        return FIELD_NAMES + self.contract.cell_outputs

    @property
    def largest_field(self) -> tuple[int, int] | None:
        """The largest padded (H, W) one whole-field pass takes here; None: any (memory permitting)."""
        return None

    def infer_field(self, field: np.ndarray) -> dict[str, np.ndarray]:
        """(1, C, Hp, Wp) float32, sides multiples of the contract's field stride -> {"mask", *FIELD_OUTPUTS}."""
        if not self.active:
            raise RuntimeError(f"{self.name} backend: activate() before infer_field()")
        check_field(field, self.contract)
        outputs = self._infer_field(np.ascontiguousarray(field, dtype=np.float32))
        checked = {name: np.asarray(outputs[name], dtype=np.float32) for name in self.field_outputs if name in outputs}
        check_output_shapes(checked, 1, self.contract, str(self.config.model), self.field_outputs, field.shape[2:])
        return checked

    def _infer_field(self, field: np.ndarray) -> dict[str, np.ndarray]:
        raise ConfigError(f"`inference` field: the {self.name} backend runs tiles only; use `inference` tiles")

    @abstractmethod
    def _load(self) -> ModelContract: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _release(self) -> None:
        """Free what `_load` allocated."""

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()


def check_batch(batch: np.ndarray, contract: ModelContract, max_batch: int) -> None:
    expected = (contract.channels, contract.tile, contract.tile)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ValueError(f"batch must be (N, {', '.join(map(str, expected))}), got {batch.shape}")
    if not 1 <= len(batch) <= max_batch:
        raise ValueError(f"batch of {len(batch)} tiles; this backend takes 1 to {max_batch}")


def check_field(field: np.ndarray, contract: ModelContract) -> None:
    """ValueError unless `field` is one (1, C, Hp, Wp) input a whole-field model takes."""
    stride = contract.field_stride
    if not contract.whole_field:
        raise ConfigError("`inference` field: the model has no whole-field outputs; re-export it")
    if field.ndim != 4 or field.shape[:2] != (1, contract.channels) or any(s % stride for s in field.shape[2:]):
        raise ValueError(f"field must be (1, {contract.channels}, H, W) with H, W multiples of {stride}, "
                         f"got {field.shape}")


def output_shapes(
    contract: ModelContract, n: int | None = None, size: Sequence[int] | None = None
) -> dict[str, tuple[int | None, ...]]:
    """The shape of each output the contract promises for `n` inputs (None: any) of `size` (default: one tile)."""
    h, w = size or (contract.tile, contract.tile)
    shapes: dict[str, tuple[int | None, ...]] = {
        "mask": (n, 1, h, w), "pattern": (n, len(contract.patterns)), "intensity": (n, 1)}
    if contract.whole_field:
        cells = (h // contract.field_stride, w // contract.field_stride)
        shapes.update(pattern_logits=(n, len(contract.patterns), *cells), intensity_logits=(n, 1, *cells))
    dense = {"distance": (n, 1, h, w), "pattern_map": (n, len(contract.patterns) + 1, h, w)}
    shapes.update({name: dense[name] for name in contract.cell_outputs})
    return shapes


def check_output_shapes(
    outputs: Mapping[str, Any], n: int, contract: ModelContract, source: str = "", names: Sequence[str] = OUTPUT_NAMES,
    size: Sequence[int] | None = None,
) -> None:
    """ContractError unless the outputs `names` (arrays or tensors) have the contract's shapes."""
    prefix = f"{source}: " if source else ""
    expected = output_shapes(contract, n, size)
    for name, shape in ((name, expected[name]) for name in names):
        if name not in outputs:
            raise ContractError(f"{prefix}model gave no '{name}' output; {FIX}")
        got = tuple(getattr(outputs[name], "shape", ()))
        if got != shape:
            raise ContractError(f"{prefix}model output '{name}' is {got}, the contract says {shape}; {FIX}")


def check_outputs(
    outputs: Mapping[str, Any], n: int, contract: ModelContract, source: str = "", names: Sequence[str] = OUTPUT_NAMES
) -> dict[str, np.ndarray]:
    """The outputs `names` as float32 arrays; ContractError (a model fault, never the input's) when off the contract."""
    checked = {name: np.asarray(outputs[name], dtype=np.float32) for name in names if name in outputs}
    check_output_shapes(checked, n, contract, source, names)
    return checked


def check_io(
    contract: ModelContract,
    source: str,
    input_names: Sequence[str],
    input_shape: Sequence[object],
    output_names: Sequence[str],
    declared: Mapping[str, Sequence[object] | None] | None = None,
) -> None:
    """Refuse a model whose inputs/outputs disagree with its contract (a static dim must match).

    `declared`: the output shapes the file states, where it states them (symbolic or unknown dims pass).
    """
    if list(input_names) != [contract.input_name]:
        raise ContractError(f"{source}: inputs {list(input_names)}, contract says ['{contract.input_name}']; {FIX}")
    missing = [name for name in contract.outputs if name not in output_names]
    if missing:
        raise ContractError(f"{source}: outputs {list(output_names)} lack {missing}; {FIX}")
    if len(input_shape) != 4:
        raise ContractError(f"{source}: input has shape {list(input_shape)}, expected 4 dims (NCHW); {FIX}")
    expected = (None, contract.channels, contract.tile, contract.tile)
    axis = _static_mismatch(input_shape, expected)
    if axis is not None:
        raise ContractError(
            f"{source}: input dim {axis} is {input_shape[axis]} but the contract says {expected[axis]} "
            f"(channels {contract.channels}, tile {contract.tile}); {FIX}"
        )
    for name, want in output_shapes(contract).items():
        _check_declared(source, name, (declared or {}).get(name), want)


def _static_mismatch(shape: Sequence[object], expected: Sequence[int | None]) -> int | None:
    """The first axis whose static (positive int) size differs from a fixed expected size, or None."""
    for axis, (dim, want) in enumerate(zip(shape, expected)):
        if want is not None and isinstance(dim, int) and dim > 0 and dim != want:
            return axis
    return None


def _check_declared(source: str, name: str, shape: Sequence[object] | None, want: tuple[int | None, ...]) -> None:
    """ContractError when an output's stated shape has another rank or a static dim off the contract."""
    if not shape:  # not stated (ONNX Runtime reports an unknown shape as [])
        return
    shown = tuple(dim if isinstance(dim, int) and dim > 0 else "N" if axis == 0 else "?"
                  for axis, dim in enumerate(shape))
    wanted = ("N", *want[1:])
    if len(shape) != len(want) or _static_mismatch(shape, want) is not None:
        raise ContractError(f"{source}: output '{name}' is {shown}, the contract says {wanted}; {FIX}")
