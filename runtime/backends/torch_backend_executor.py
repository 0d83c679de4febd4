"""The torch backend's device path: twins of preprocess.py in torch, so that for a checkpoint on a GPU the
tiles are cut and normalised there and the masks thresholded there (the raw frame goes up, uint8 masks come
down), as the TensorRT path does with its CUDA kernel.

Same arithmetic as the numpy reference, in the same order and in float32 (scale by the float32 reciprocal;
minmax over the whole tile, pad zeros included; then (x - mean) / std): bit-identical on the CPU, within
float32 rounding on a GPU. Imported only with the torch backend.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from hep2edge.contract import ModelContract
from hep2edge.normalization import dtype_scale
from hep2edge.runtime.backends.base import check_output_shapes
from hep2edge.runtime.backends.torch_backend import TorchBackend
from hep2edge.runtime.executors import Chunk, in_tile_batches, split_outputs
from hep2edge.runtime.field import field_shape, pooled_outputs
from hep2edge.runtime.results import TileOutputs
from hep2edge.tiling import TileGrid

UINT16_MASK = 0xFFFF
INDEX_CACHE_SIZES = 32  # frame sizes whose tile indices stay on the device (a days-long watch sees few)


def _f32(value: float) -> float:
    """`value` rounded to float32, as numpy's float32 scalars are: the same constant on both sides."""
    return float(np.float32(value))


class TorchTiler:
    """Cuts and normalises the tiles of gray frames on one torch device (the torch backend's)."""

    def __init__(self, contract: ModelContract, device: torch.device) -> None:
        self.contract, self.device = contract, device
        self._indices: OrderedDict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        spec = contract.normalization
        # 0-dim device tensors: CUDA turns division by a Python number into a multiply by its reciprocal
        # (one bit off numpy); a tensor divisor takes the exact division path
        self._mean = torch.tensor(_f32(spec.mean), device=device)
        self._std = torch.tensor(_f32(spec.std), device=device)

    def upload(self, gray: np.ndarray) -> torch.Tensor:
        """(H, W) uint8/uint16 frame -> zero-padded to at least one tile each way, uint8 or int32, on the device
        (uint16 goes up as its int16 bits)."""
        if gray.ndim != 2 or gray.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected an (H, W) uint8/uint16 frame, got {gray.dtype} {gray.shape}")
        if gray.dtype == np.uint8:
            frame = torch.from_numpy(np.ascontiguousarray(gray)).to(self.device)
        else:
            bits = torch.from_numpy(np.ascontiguousarray(gray).view(np.int16)).to(self.device)
            frame = bits.to(torch.int32) & UINT16_MASK
        t, (height, width) = self.contract.tile, gray.shape
        if height >= t and width >= t:
            return frame
        padded = frame.new_zeros((max(height, t), max(width, t)))
        padded[:height, :width] = frame
        return padded

    def _grid_indices(self, grid: TileGrid) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, t) row and column indices of every tile in the padded frame, for the latest frame sizes."""
        key = (grid.height, grid.width)
        if key in self._indices:
            self._indices.move_to_end(key)
            return self._indices[key]
        offsets = torch.arange(grid.tile, device=self.device)
        tops = torch.tensor([p[0] for p in grid.positions], device=self.device)
        lefts = torch.tensor([p[1] for p in grid.positions], device=self.device)
        self._indices[key] = (tops[:, None] + offsets, lefts[:, None] + offsets)
        if len(self._indices) > INDEX_CACHE_SIZES:
            self._indices.popitem(last=False)
        return self._indices[key]

    def tiles(self, frame: torch.Tensor, grid: TileGrid, start: int, stop: int, scale: float) -> torch.Tensor:
        """Tiles [start, stop) of an uploaded frame -> (n, 1, t, t) float32 normalised network input."""
        if tuple(frame.shape) != grid.padded_shape:
            raise ValueError(f"frame of {tuple(frame.shape)} uploaded, grid is for {grid.padded_shape}")
        rows, cols = self._grid_indices(grid)
        x = frame[rows[start:stop, :, None], cols[start:stop, None, :]].to(torch.float32)
        spec = self.contract.normalization
        if spec.mode == "fixed":
            x = x * _f32(1.0 / scale)
        else:
            lo = x.amin(dim=(1, 2), keepdim=True)
            span = x.amax(dim=(1, 2), keepdim=True) - lo
            x = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 0.0)
        if spec.mean != 0.0 or spec.std != 1.0:
            x = (x - self._mean) / self._std
        return x[:, None]

    def field(self, frame: torch.Tensor, height: int, width: int, scale: float) -> torch.Tensor:
        """An uploaded (H, W) frame -> (1, 1, Hp, Wp) float32: zero-padded to multiples of the field stride, then
        normalised as a whole (the twin of runtime.field.field_input; `fixed` normalisation only)."""
        spec = self.contract.normalization
        if spec.mode != "fixed":
            raise ValueError(f"whole-field input needs fixed normalisation, the contract has {spec.mode}")
        padded = frame.new_zeros(field_shape(height, width, self.contract.field_stride))
        padded[:height, :width] = frame[:height, :width]
        x = padded.to(torch.float32) * _f32(1.0 / scale)
        if spec.mean != 0.0 or spec.std != 1.0:
            x = (x - self._mean) / self._std
        return x[None, None]

    def clear(self) -> None:
        self._indices.clear()


def u8_on_device(probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities -> uint8 0..255 on the device; the torch twin of runtime.cells.to_u8."""
    return (probabilities.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def threshold_on_device(probabilities: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, 1, t, t) probabilities (any float dtype) -> (N, t, t) uint8 0/1, foreground where p > threshold."""
    p = probabilities.to(torch.float32).reshape(len(probabilities), *probabilities.shape[-2:])
    return (p > _f32(threshold)).to(torch.uint8)


class TorchDeviceExecutor:
    """The torch backend on its device: each frame goes up once as raw pixels, its tiles are cut and normalised
    there and the masks thresholded there; only uint8 masks and the small heads come back to the host."""

    preprocess_on_host = False
    whole_frames = False

    def __init__(self, backend: TorchBackend) -> None:
        self.backend = backend
        self.tiler = TorchTiler(backend.contract, backend.device)
        self._key: int | None = None
        self._frame: torch.Tensor | None = None  # kept: a frame may span two batches

    @torch.inference_mode()
    def run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        pieces = []
        for chunk in chunks:
            if self._key != chunk.key or self._frame is None:
                self._frame, self._key = self.tiler.upload(chunk.gray), chunk.key
            scale = dtype_scale(chunk.gray.dtype)
            pieces.append(self.tiler.tiles(self._frame, chunk.grid, chunk.start, chunk.stop, scale))
        batch = torch.cat(pieces)
        outputs = dict(zip(self.backend.tile_outputs, self.backend.infer_tensor(batch)))
        check_output_shapes(outputs, len(batch), self.backend.contract, names=tuple(outputs))
        masks = threshold_on_device(outputs["mask"], self.backend.contract.mask_threshold).cpu().numpy()
        heads = {name: outputs[name].float().cpu().numpy() for name in ("pattern", "intensity")}
        # the per-cell maps cross to the host as uint8 (a quarter of the bytes), as the writers keep them
        heads.update({name: u8_on_device(outputs[name]).cpu().numpy() for name in self.backend.contract.cell_outputs})
        return split_outputs(heads, masks, chunks)

    def close(self) -> None:
        self._frame = None
        self.tiler.clear()


class TorchFieldExecutor:
    """Whole-field inference on the torch backend's device: the raw frame goes up, is padded and normalised there,
    the mask is thresholded there; the uint8 mask and dense maps and the small logit maps come down. A frame kept
    in tiles (smaller than a tile) takes the tile device path, `max_batch` tiles at a time."""

    preprocess_on_host = False
    whole_frames = True

    def __init__(self, backend: TorchBackend) -> None:
        self.backend = backend
        self.tiles = TorchDeviceExecutor(backend)

    @torch.inference_mode()
    def run(self, chunks: list[Chunk]) -> list[TileOutputs]:
        return [self._field(chunk) if chunk.field else in_tile_batches(self.tiles, chunk, self.backend.max_batch)
                for chunk in chunks]

    def _field(self, chunk: Chunk) -> TileOutputs:
        contract, (height, width) = self.backend.contract, chunk.gray.shape[:2]
        tiler = self.tiles.tiler
        x = tiler.field(tiler.upload(chunk.gray), height, width, dtype_scale(chunk.gray.dtype))
        out = self.backend.infer_field_tensor(x)
        check_output_shapes(out, 1, contract, names=tuple(out), size=tuple(x.shape[2:]))
        mask = threshold_on_device(out["mask"][:, :, :height, :width], contract.mask_threshold)[0].cpu().numpy()
        dense = {name: u8_on_device(out[name][0, :, :height, :width]).cpu().numpy() for name in contract.cell_outputs}
        logits = {name: out[name].cpu().numpy() for name in ("pattern_logits", "intensity_logits")}
        return pooled_outputs(logits, chunk.grid, contract, mask, dense)

    def close(self) -> None:
        self.tiles.close()
