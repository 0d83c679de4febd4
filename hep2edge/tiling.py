"""The tile grid: cut an image into overlapping square tiles and stitch per-tile maps back.

The seed grid (15 tiles of 384 on 1040 x 1388: left = 251*i, top = 328*j) is what `tile_grid`
returns for that size; other sizes get the fewest tiles that cover the image, spread evenly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_EXTRA_FOR_EXACT_STRIDE = 1


def axis_starts(length: int, tile: int, min_overlap: int = 0) -> list[int]:
    """Start offsets of tiles along one axis of `length` pixels.

    Fewest tiles that cover with neighbours overlapping by >= `min_overlap` px; one more tile is allowed when
    that makes the stride a whole number (this is what reproduces the seed's 5 x 251 columns on 1388 px). A
    length shorter than a tile gets one tile at 0 (the image is padded).
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    if not 0 <= min_overlap < tile:
        raise ValueError(f"tile overlap must be in [0, {tile}) px for {tile} px tiles, got {min_overlap}")
    if length <= tile:
        return [0]
    span = length - tile
    fewest = math.ceil(span / (tile - min_overlap)) + 1
    for count in range(fewest, fewest + MAX_EXTRA_FOR_EXACT_STRIDE + 1):
        if span % (count - 1) == 0:
            stride = span // (count - 1)
            return [stride * i for i in range(count)]
    return [round(span * i / (fewest - 1)) for i in range(fewest)]


@dataclass(frozen=True)
class TileGrid:
    """Tile positions for one image size: tiles are row-major, (top, left) in image pixels."""

    height: int
    width: int
    tile: int
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @property
    def positions(self) -> list[tuple[int, int]]:
        return [(top, left) for top in self.tops for left in self.lefts]

    def __len__(self) -> int:
        return len(self.tops) * len(self.lefts)

    @property
    def padded_shape(self) -> tuple[int, int]:
        return max(self.height, self.tile), max(self.width, self.tile)

    def valid_size(self, index: int) -> tuple[int, int]:
        """Height and width of the part of tile `index` that lies inside the image (not pad)."""
        top, left = self.positions[index]
        return min(self.tile, self.height - top), min(self.tile, self.width - left)


def tile_grid(height: int, width: int, tile: int, min_overlap: int = 0) -> TileGrid:
    """The grid of `tile` x `tile` tiles covering a `height` x `width` image (neighbours overlap >= min_overlap)."""
    return TileGrid(height, width, tile, tuple(axis_starts(height, tile, min_overlap)),
                    tuple(axis_starts(width, tile, min_overlap)))


def pad_to_grid(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Zero-pad an (H, W[, C]) image at the bottom/right so every tile lies inside it."""
    ph, pw = grid.padded_shape
    if image.shape[:2] != (grid.height, grid.width):
        raise ValueError(f"image is {image.shape[:2]}, grid is for {(grid.height, grid.width)}")
    if (ph, pw) == (grid.height, grid.width):
        return image
    pad = [(0, ph - grid.height), (0, pw - grid.width)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad)


def extract_tiles(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(H, W[, C]) -> (N, tile, tile[, C]) in grid order, padded where the image is small."""
    padded = pad_to_grid(image, grid)
    t = grid.tile
    return np.stack([padded[top : top + t, left : left + t] for top, left in grid.positions])


def _accumulate(tiles: np.ndarray, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    if tiles.shape[0] != len(grid) or tiles.shape[1:3] != (grid.tile, grid.tile):
        raise ValueError(f"expected ({len(grid)}, {grid.tile}, {grid.tile}) tiles, got {tiles.shape}")
    ph, pw = grid.padded_shape
    total = np.zeros((ph, pw), dtype=np.float64)
    count = np.zeros((ph, pw), dtype=np.int32)
    t = grid.tile
    for value, (top, left) in zip(tiles, grid.positions):
        total[top : top + t, left : left + t] += value
        count[top : top + t, left : left + t] += 1
    return total[: grid.height, : grid.width], count[: grid.height, : grid.width]


def stitch_mean(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, tile, tile) per-tile maps -> (H, W) float32 mean over the tiles covering each pixel."""
    total, count = _accumulate(tiles.astype(np.float64), grid)
    return (total / count).astype(np.float32)


def inner_spans(starts: tuple[int, ...], tile: int, length: int) -> list[tuple[int, int]]:
    """Per tile along one axis, the [lo, hi) it owns when each overlap is split at its middle (tiles tile the axis)."""
    cuts = [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)]
    return list(zip([0, *cuts], [*cuts, length]))


def stitch_inner_channels(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, C, tile, tile) per-tile maps -> (C, H, W) of the same dtype: each pixel from the tile whose inner part
    holds it (overlaps split at their middle), so no pixel comes from the rim of a tile where a neighbour sees more
    context. One copy per tile: for the dense heads, where edge effects of small tiles show as seams."""
    if tiles.ndim != 4 or tiles.shape[0] != len(grid) or tiles.shape[2:] != (grid.tile, grid.tile):
        raise ValueError(f"expected ({len(grid)}, C, {grid.tile}, {grid.tile}) tiles, got {tiles.shape}")
    out = np.empty((tiles.shape[1], grid.height, grid.width), dtype=tiles.dtype)
    rows = inner_spans(grid.tops, grid.tile, grid.height)
    columns = inner_spans(grid.lefts, grid.tile, grid.width)
    index = 0
    for (top, (y0, y1)) in zip(grid.tops, rows):
        for (left, (x0, x1)) in zip(grid.lefts, columns):
            out[:, y0:y1, x0:x1] = tiles[index, :, y0 - top : y1 - top, x0 - left : x1 - left]
            index += 1
    return out


def _binary_votes(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, tile, tile) binary maps -> (H, W) uint8: how many covering tiles say foreground (integer adds only)."""
    if tiles.shape[0] != len(grid) or tiles.shape[1:3] != (grid.tile, grid.tile):
        raise ValueError(f"expected ({len(grid)}, {grid.tile}, {grid.tile}) tiles, got {tiles.shape}")
    votes = np.zeros(grid.padded_shape, dtype=np.uint8)
    t = grid.tile
    for value, (top, left) in zip(tiles, grid.positions):
        votes[top : top + t, left : left + t] += value != 0
    return votes[: grid.height, : grid.width]


@lru_cache(maxsize=32)
def majority_floor(grid: TileGrid) -> np.ndarray:
    """(H, W) uint8 read-only: half the tiles covering each pixel, rounded down (computed once per grid)."""
    half = _binary_votes(np.ones((len(grid), grid.tile, grid.tile), dtype=bool), grid) // 2
    half.setflags(write=False)
    return half


def stitch_or(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, tile, tile) binary maps -> (H, W) bool: foreground if any covering tile says so."""
    return _binary_votes(tiles, grid) > 0


def stitch_majority(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, tile, tile) binary maps -> (H, W) bool: foreground if more than half the covering tiles say so.

    votes > count // 2 is votes * 2 > count for integers, without widening the uint8 votes.
    """
    return _binary_votes(tiles, grid) > majority_floor(grid)


STITCHERS = {"mean": stitch_mean, "or": stitch_or, "majority": stitch_majority}
