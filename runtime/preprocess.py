"""The numpy reference of the runtime's image steps; the CUDA twins in cuda_preprocess.py are tested against it.

raw frame (H, W[, 3]) uint8/uint16 -> gray by the channel policy -> tiles on the grid -> dtype scale and
normalisation -> (N, C, t, t) float32. After inference: mask probabilities -> uint8 0/1 tiles -> stitched
full-size mask.
"""

from __future__ import annotations

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError, ImageReadError
from hep2edge.imageio import CHANNEL_POLICIES
from hep2edge.normalization import normalize_tiles
from hep2edge.runtime.results import TileOutputs
from hep2edge.runtime.settings import MASK_STITCHERS
from hep2edge.tiling import STITCHERS, TileGrid, extract_tiles, tile_grid

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def to_gray(frame: np.ndarray, channel_policy: str, source: str = "frame") -> np.ndarray:
    """(H, W) stays; (H, W, 3|4) RGB(A) is reduced by the channel policy; (H, W, 1) is squeezed."""
    if frame.dtype not in SUPPORTED_DTYPES:
        raise ImageReadError(f"{source}: unsupported pixel type {frame.dtype} (need uint8 or uint16)")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[..., 0]
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        return np.asarray(CHANNEL_POLICIES.get(channel_policy)(frame[..., :3]))
    raise ImageReadError(f"{source}: unsupported frame shape {frame.shape}")


def check_contract_channels(contract: ModelContract) -> None:
    """The runtime feeds one gray channel (the channel policy makes it); refuse other models up front."""
    if contract.channels != 1:
        raise ConfigError(
            f"the model takes {contract.channels} input channels; the runtime feeds 1 gray channel "
            "(chosen by `channel`); export a 1-channel model"
        )


def smallest_side(contract: ModelContract) -> int:
    """Fields narrower than a quarter tile on either side carry no analysable cell: refused, not guessed at."""
    return max(1, contract.tile // 4)


def check_frame_size(frame: np.ndarray, contract: ModelContract, source: str) -> None:
    """ImageReadError for a frame smaller than `smallest_side` in height or width (e.g. 1 x 1, 20000 x 1)."""
    height, width = int(frame.shape[0]), int(frame.shape[1])
    least = smallest_side(contract)
    if min(height, width) < least:
        raise ImageReadError(f"{source}: image is {width} x {height} pixels; both sides must be at least "
                             f"{least} (a quarter of the model's {contract.tile} px tile)")


def check_tile_overlap(overlap: int, contract: ModelContract) -> None:
    """ConfigError unless neighbouring tiles can overlap by `overlap` px with this model's tiles."""
    if overlap >= contract.tile:
        raise ConfigError(f"`tile_overlap` {overlap} px: must be below the model's {contract.tile} px tiles")


def frame_grid(frame: np.ndarray, contract: ModelContract, overlap: int = 0) -> TileGrid:
    """The contract's tiles over a frame; neighbours overlap by >= `overlap` px (0: the fewest tiles)."""
    return tile_grid(int(frame.shape[0]), int(frame.shape[1]), contract.tile, overlap)


def frame_to_batch(gray: np.ndarray, contract: ModelContract, overlap: int = 0) -> tuple[np.ndarray, TileGrid]:
    """(H, W) uint8/uint16 -> ((N, 1, t, t) float32 normalised tiles, the grid they were cut on)."""
    grid = frame_grid(gray, contract, overlap)
    return normalize_tiles(extract_tiles(gray, grid), contract.normalization), grid


def threshold_masks(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """(N, 1, t, t) probabilities (fp32 or fp16) -> (N, t, t) uint8 0/1 (foreground where p > threshold)."""
    p = np.asarray(probabilities, dtype=np.float32).reshape(len(probabilities), *probabilities.shape[-2:])
    return (p > np.float32(threshold)).astype(np.uint8)


def stitch_mask(tile_masks: np.ndarray, grid: TileGrid, method: str = "majority") -> np.ndarray:
    """(N, t, t) uint8 0/1 tile masks -> (H, W) uint8 0/255 full-size mask (the pad is never foreground)."""
    if method not in MASK_STITCHERS:
        raise ConfigError(f"unknown mask stitching '{method}'; valid: {', '.join(MASK_STITCHERS)}")
    return STITCHERS[method](tile_masks, grid).view(np.uint8) * np.uint8(255)


def tile_foreground(tile_masks: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N,) foreground fraction of each tile, counted over its in-image part only."""
    fractions = np.empty(len(grid), dtype=np.float64)
    for index in range(len(grid)):
        h, w = grid.valid_size(index)
        fractions[index] = np.count_nonzero(tile_masks[index, :h, :w]) / (h * w) if h and w else 0.0
    return fractions


def field_foreground(mask: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N,) foreground fraction of each tile's in-image part, read off an (H, W) 0/1 whole-field mask."""
    fractions = np.empty(len(grid), dtype=np.float64)
    for index, (top, left) in enumerate(grid.positions):
        h, w = grid.valid_size(index)
        fractions[index] = np.count_nonzero(mask[top : top + h, left : left + w]) / (h * w) if h and w else 0.0
    return fractions


def full_mask(outputs: TileOutputs, grid: TileGrid, method: str = "majority") -> tuple[np.ndarray, np.ndarray]:
    """The (H, W) uint8 0/255 mask (stitched from tiles, or the whole-field one) and each tile's foreground."""
    if outputs.field_mask is not None:
        return outputs.field_mask * np.uint8(255), field_foreground(outputs.field_mask, grid)
    assert outputs.mask is not None
    return stitch_mask(outputs.mask, grid, method), tile_foreground(outputs.mask, grid)
