"""The GPU stage's ways to run a batch of tiles gathered from several frames, or one whole field.

`HostExecutor`: tiles were cut and normalised by numpy on the reader threads; the batch goes through
`backend.infer`, masks are thresholded on the host. `CudaExecutor` (TensorRT + pycuda): each frame's gray
image is copied to the GPU once, one kernel writes its normalised tiles straight into the engine's input
buffer, and masks are thresholded on the GPU so only uint8 masks and the small heads cross D2H.
`TorchDeviceExecutor` (backends/torch_backend_executor.py) does the same with torch operations for a
checkpoint on a GPU. Whole fields (`--inference field`): `FieldExecutor` (host preprocessing, any backend),
`CudaFieldExecutor` (TensorRT) and `TorchFieldExecutor` (torch) pad and normalise the field on the GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hep2edge.contract import CELL_OUTPUTS
from hep2edge.runtime.backends.base import Backend, check_output_shapes
from hep2edge.runtime.cells import to_u8
from hep2edge.runtime.field import check_inference_mode, field_outputs, field_shape, pooled_outputs
from hep2edge.runtime.preprocess import threshold_masks
from hep2edge.runtime.results import TileOutputs
from hep2edge.runtime.settings import PREPROCESS_MODES, check_choice
from hep2edge.tiling import TileGrid

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from hep2edge.runtime.backends.tensorrt_backend import TensorRTBackend


@dataclass
class Chunk:
    """Tiles [start, stop) of one frame: `tiles` holds host-normalised tiles (host path) or None (GPU path)."""

    key: int
    gray: np.ndarray
    grid: TileGrid
    start: int
    stop: int
    tiles: np.ndarray | None
    field: bool = False  # `tiles` is the (1, C, Hp, Wp) whole-field input, not tiles [start, stop)

    @property
    def size(self) -> int:
        return self.stop - self.start


class Executor(Protocol):
    preprocess_on_host: bool
    whole_frames: bool  # each call gets whole frames (whole-field inference), not a batch of tiles

    def run(self, chunks: list[Chunk]) -> list[TileOutputs]: ...

    def close(self) -> None: ...


def split_outputs(outputs: dict[str, np.ndarray], mask: np.ndarray, chunks: list[Chunk]) -> list[TileOutputs]:
    """One batch's outputs cut back into each chunk's tiles; the per-cell heads as uint8 maps."""
    dense = {name: to_u8(outputs[name]) for name in CELL_OUTPUTS if name in outputs}
    parts, offset = [], 0
    for chunk in chunks:
        end = offset + chunk.size
        parts.append(TileOutputs(mask=mask[offset:end], pattern=outputs["pattern"][offset:end],
                                 intensity=outputs["intensity"][offset:end, 0],
                                 dense={name: value[offset:end] for name, value in dense.items()}))
        offset = end
    return parts


def join_outputs(parts: list[TileOutputs]) -> TileOutputs:
    """Consecutive tile ranges of one frame (run in several batches) as one frame's outputs."""
    dense = {name: np.concatenate([part.dense[name] for part in parts]) for name in parts[0].dense}
    masks = [part.mask for part in parts if part.mask is not None]
    return TileOutputs(mask=np.concatenate(masks), pattern=np.concatenate([part.pattern for part in parts]),
                       intensity=np.concatenate([part.intensity for part in parts]), dense=dense)


def in_tile_batches(tiles: Executor, chunk: Chunk, step: int) -> TileOutputs:
    """A whole frame kept in tiles, run by a tile executor `step` tiles at a time (its largest batch)."""
    return join_outputs([tiles.run([Chunk(chunk.key, chunk.gray, chunk.grid, start, min(start + step, chunk.stop),
                                          None)])[0] for start in range(chunk.start, chunk.stop, step)])


class HostExecutor:
    """Any backend; numpy preprocessing (done earlier, on the reader threads) and host threshold."""

    preprocess_on_host = True
    whole_frames = False

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        batch = np.concatenate([c.tiles for c in chunks if c.tiles is not None])
        outputs = self.backend.infer(batch)
        mask = threshold_masks(outputs["mask"], self.backend.contract.mask_threshold)
        return split_outputs(outputs, mask, chunks)

    def close(self) -> None:
        """Nothing to free: the backend is closed by its owner."""


class FieldExecutor:
    """Whole-field inference: one network pass per field (host preprocessing); per-tile evidence pooled from the
    heads' maps (field.py). A frame the reader kept in tiles (too small or too large) runs in tile batches."""

    preprocess_on_host = True
    whole_frames = True

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        return [self._one(chunk) for chunk in chunks]

    def _one(self, chunk: Chunk) -> TileOutputs:
        assert chunk.tiles is not None
        if chunk.field:
            return field_outputs(self.backend.infer_field(chunk.tiles), chunk.grid, self.backend.contract)
        step = self.backend.max_batch
        parts = [self.backend.infer(chunk.tiles[start : start + step]) for start in range(0, len(chunk.tiles), step)]
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        mask = threshold_masks(outputs["mask"], self.backend.contract.mask_threshold)
        return split_outputs(outputs, mask, [chunk])[0]

    def close(self) -> None:
        """Nothing to free: the backend is closed by its owner."""


class CudaExecutor:
    """TensorRT with CUDA preprocessing and the on-GPU mask threshold (one stream, shared with the engine)."""

    preprocess_on_host = False
    whole_frames = False

    def __init__(self, backend: TensorRTBackend) -> None:
        from hep2edge.runtime.cuda_preprocess import CudaPreprocessor

        self.backend = backend
        with backend.on_this_thread():
            self.pre = CudaPreprocessor(backend.contract, stream=backend.stream)
        self._current: int | None = None

    def run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        with self.backend.on_this_thread():  # the GPU thread is not the one that activated the backend
            return self._run(chunks)

    def _run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        contract = self.backend.contract
        binding = self.backend.input_binding
        tile_bytes = contract.channels * contract.tile * contract.tile * binding.host.dtype.itemsize
        offset = 0
        for chunk in chunks:
            if self._current != chunk.key:
                self.pre.upload(chunk.gray)
                self._current = chunk.key
            destination: Any = int(binding.device) + offset * tile_bytes
            self.pre.cut(chunk.grid, destination, binding.host.dtype, chunk.start, chunk.size)
            offset += chunk.size
        outputs = self.backend.infer_on_device(offset, copy=("pattern", "intensity", *contract.cell_outputs))
        check_output_shapes(outputs, offset, contract, str(self.backend.config.model), names=tuple(outputs))
        mask_dtype = self.backend.output_dtype("mask")
        t = contract.tile
        mask = self.pre.threshold(int(self.backend.output_device("mask")), (offset, t, t), mask_dtype,
                                  contract.mask_threshold)
        return split_outputs(outputs, mask, chunks)

    def uploaded(self, key: int) -> None:
        """The frame `key` is on the device now (another executor sharing this preprocessor put it there)."""
        self._current = key

    def close(self) -> None:
        with self.backend.on_this_thread():
            self.pre.close()


class CudaFieldExecutor:
    """TensorRT whole fields with CUDA preprocessing: the raw frame goes up once, is padded and normalised into the
    field profile's input buffer and its mask thresholded there; the uint8 mask and the logit / dense maps come
    back. A frame kept in tiles (smaller than a tile) takes the CudaExecutor path, `max_batch` tiles at a time."""

    preprocess_on_host = False
    whole_frames = True

    def __init__(self, backend: TensorRTBackend) -> None:
        self.backend = backend
        self.tiles = CudaExecutor(backend)  # its preprocessor (on the engine's stream) serves both paths

    def run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        with self.backend.on_this_thread():
            return [self._field(chunk) if chunk.field else in_tile_batches(self.tiles, chunk, self.backend.max_batch)
                    for chunk in chunks]

    def _field(self, chunk: Chunk) -> TileOutputs:
        backend, contract, pre = self.backend, self.backend.contract, self.tiles.pre
        height, width = chunk.gray.shape[:2]
        padded = field_shape(height, width, contract.field_stride)
        pre.upload(chunk.gray)
        self.tiles.uploaded(chunk.key)
        source = backend.field_binding(contract.input_name)
        pre.field(int(source.device), source.host.dtype, padded)
        out = backend.infer_field_on_device((1, contract.channels, *padded),
                                            ("pattern_logits", "intensity_logits", *contract.cell_outputs))
        probabilities = backend.field_binding("mask")
        mask = pre.threshold(int(probabilities.device), (1, 1, *padded), probabilities.host.dtype,
                             contract.mask_threshold)[0, 0, :height, :width]
        dense = {name: to_u8(out[name][0, :, :height, :width]) for name in contract.cell_outputs}
        return pooled_outputs(out, chunk.grid, contract, np.ascontiguousarray(mask), dense)

    def close(self) -> None:
        self.tiles.close()


def _torch_executor(backend: Backend, preprocess: str, inference: str) -> Executor:
    """A checkpoint on a GPU preprocesses there (auto, cuda), tiles or whole fields; on the CPU, on the readers."""
    from hep2edge.errors import ConfigError

    on_gpu = backend.device_name().startswith("cuda")
    if preprocess == "host" or (preprocess == "auto" and not on_gpu):
        return FieldExecutor(backend) if inference == "field" else HostExecutor(backend)
    if not on_gpu:
        raise ConfigError(f"`preprocess` cuda needs a GPU; the torch backend runs on {backend.device_name()}")
    from hep2edge.runtime.backends.torch_backend_executor import TorchDeviceExecutor, TorchFieldExecutor

    executor = TorchFieldExecutor if inference == "field" else TorchDeviceExecutor
    return executor(backend)  # type: ignore[arg-type]


def make_executor(backend: Backend, preprocess: str, inference: str = "tiles") -> Executor:
    """`preprocess`: host | cuda | auto (on the GPU with TensorRT + pycuda, or with torch on a GPU);
    `inference`: tiles | field (whole-field passes; on the GPU where tiles would be, else on the host)."""
    from hep2edge.errors import ConfigError

    check_choice("preprocess", preprocess, PREPROCESS_MODES)
    check_inference_mode(inference, backend.contract, str(backend.config.model))
    if backend.name == "torch":
        return _torch_executor(backend, preprocess, inference)
    if inference == "field":
        if backend.largest_field == (0, 0):
            raise ConfigError(f"`inference` field: {backend.config.model} was built without a whole-field profile; "
                              "rebuild it with `hep2edge build-engine --field-size HxW` or use `inference` tiles")
        if backend.name == "tensorrt" and preprocess != "host":
            return _on_gpu(lambda: CudaFieldExecutor(backend), lambda: FieldExecutor(backend), preprocess)  # type: ignore[arg-type]
        if preprocess == "cuda":
            raise ConfigError(f"`inference` field: the {backend.name} backend preprocesses whole fields on the host "
                              "(tensorrt and torch do it on the GPU); use `preprocess` host or auto")
        return FieldExecutor(backend)
    if preprocess == "host" or (preprocess == "auto" and backend.name != "tensorrt"):
        return HostExecutor(backend)
    if backend.name != "tensorrt":
        raise ConfigError(f"`preprocess` cuda needs the tensorrt or torch backend (this run uses {backend.name})")
    return _on_gpu(lambda: CudaExecutor(backend), lambda: HostExecutor(backend), preprocess)  # type: ignore[arg-type]


def _on_gpu(make: Callable[[], Executor], host: Callable[[], Executor], preprocess: str) -> Executor:
    """TensorRT's CUDA-preprocessing executor; with `auto`, the host path when it cannot start (no pycuda, no
    nvcc on a Jetson without the toolkit, ...), said in one line."""
    try:
        return make()
    except Exception as exc:
        if preprocess == "cuda":
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        log.warning("CUDA preprocessing unavailable (%s: %s); preprocessing on the host instead",
                    exc.__class__.__name__, first)
        return host()
