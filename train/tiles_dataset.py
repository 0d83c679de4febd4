"""Tiles cut once into memory: raw image tiles, mask tiles and per-tile labels for a whole dataset.

Every image is read once and cut on its tile grid; folds then only index these arrays. With a dense head on,
the per-pixel targets of hep2edge.train.targets are cut alongside (instances, distance, pattern classes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.errors import DataError
from hep2edge.imageio import read_image, read_mask
from hep2edge.tiling import TileGrid, extract_tiles, tile_grid
from hep2edge.train.targets import CellClasses, DenseNeeds, cut_dense_targets


@dataclass
class TileSet:
    """N tiles: images (N, t, t[, 3]) raw dtype, masks (N, t, t) bool, valid (N, 2) in-image height/width."""

    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    pattern: np.ndarray  # (N,) int64
    intensity: np.ndarray  # (N,) int64
    image_ids: np.ndarray  # (N,) str
    patient_ids: np.ndarray  # (N,) str
    instances: np.ndarray | None = None  # (N, t, t) uint16 cell ids, 0 = background (a dense head is on)
    distance: np.ndarray | None = None  # (N, t, t) uint8 round(255 * distance target) (--instances)
    classes: np.ndarray | None = None  # (N, t, t) uint8 0 background, 1 + pattern (--pattern-map)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> TileSet:
        picked: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            picked[f.name] = None if value is None else value[index]
        return TileSet(**picked)

    def patients_mask(self, patients: Sequence[str]) -> np.ndarray:
        return np.isin(self.patient_ids, np.asarray(list(patients), dtype=str))


_FIELDS = ("images", "masks", "valid", "pattern", "intensity", "image_ids", "patient_ids")
_DENSE = ("instances", "distance", "classes")


def valid_pixels(valid: np.ndarray, tile: int) -> np.ndarray:
    """(N, 2) in-image sizes -> (N, t, t) bool, False on the pad of tiles that overhang a small image."""
    rows = np.arange(tile)[None, :, None] < valid[:, 0, None, None]
    cols = np.arange(tile)[None, None, :] < valid[:, 1, None, None]
    return rows & cols


def _channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """(H, W) gray -> itself for 1 channel, or (H, W, 3) replicated for 3."""
    return image if in_channels == 1 else np.repeat(image[..., None], 3, axis=2)


def read_pair(image_path: Path, mask_path: Path | None, channel_policy: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, (H, W) bool mask) of one record; DataError when it has no mask or their sizes differ."""
    if mask_path is None:
        raise DataError(f"{image_path}: has no mask; training needs a mask for every image")
    image = read_image(image_path, channel_policy)
    mask = read_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                        f"its image is {image.shape[1]}x{image.shape[0]}")
    return image, mask


def cut_pair(image: np.ndarray, mask: np.ndarray, grid: TileGrid,
             in_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tiles, mask tiles, (N, 2) valid sizes) of one image on `grid`."""
    return (
        extract_tiles(_channels(image, in_channels), grid),
        extract_tiles(mask, grid),
        np.array([grid.valid_size(i) for i in range(len(grid))], dtype=np.int64).reshape(-1, 2),
    )


def cut_record(
    image_path: Path, mask_path: Path | None, tile: int, channel_policy: str, in_channels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image -> (tiles, mask tiles, (N, 2) valid sizes) on its grid; DataError when it has no mask."""
    image, mask = read_pair(image_path, mask_path, channel_policy)
    return cut_pair(image, mask, tile_grid(image.shape[0], image.shape[1], tile), in_channels)


def require_masks(records: Sequence[Any], where: str) -> None:
    """DataError naming the images that have no mask (training needs one per image)."""
    missing = [r for r in records if r.mask is None]
    if missing:
        shown = ", ".join(f"{r.image.name} (line {r.line})" for r in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{where}: {len(missing)} image(s) have no mask (empty mask cell and no {{stem}}_Mask file): "
                        f"{shown}; training needs a mask per image")


def build_tile_set(
    records: Sequence[object],
    tile: int,
    channel_policy: str = "luminance",
    in_channels: int = 1,
    on_image: Callable[[int], None] | None = None,
    dense: DenseNeeds | None = None,
    cell_classes: Sequence[CellClasses] | None = None,
) -> TileSet:
    """Read and cut every record (ImageRecord-like: image, mask, patient, pattern, intensity[, labels]).

    `dense`: also cut the dense heads' targets; `cell_classes[i]`: record i's cells.csv classes (cell id -> pattern).
    """
    dense = dense or DenseNeeds()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _FIELDS + (_DENSE if dense.any else ())}
    first_of_dtype: dict[np.dtype, Path] = {}
    for number, record in enumerate(records):
        image, mask = read_pair(record.image, record.mask, channel_policy)  # type: ignore[attr-defined]
        grid = tile_grid(image.shape[0], image.shape[1], tile)
        images, masks, valid = cut_pair(image, mask, grid, in_channels)
        if dense.any:
            cells: Mapping[int, int] = cell_classes[number] if cell_classes is not None else {}
            targets = cut_dense_targets(getattr(record, "labels", None), mask, grid, dense,
                                        int(record.pattern), cells)  # type: ignore[attr-defined]
            for name, value in targets.items():
                parts[name].append(value)
        first_of_dtype.setdefault(images.dtype, record.image)  # type: ignore[attr-defined]
        n = len(images)
        parts["images"].append(images)
        parts["masks"].append(masks)
        parts["valid"].append(valid)
        parts["pattern"].append(np.full(n, int(record.pattern), dtype=np.int64))  # type: ignore[attr-defined]
        parts["intensity"].append(np.full(n, int(record.intensity), dtype=np.int64))  # type: ignore[attr-defined]
        parts["image_ids"].append(np.full(n, str(record.image)))  # type: ignore[attr-defined]
        parts["patient_ids"].append(np.full(n, str(record.patient)))  # type: ignore[attr-defined]
        if on_image is not None:
            on_image(number + 1)
    if not parts["images"]:
        raise DataError("the dataset lists no images")
    if len(first_of_dtype) > 1:
        shown = ", ".join(f"{path} is {dtype}" for dtype, path in first_of_dtype.items())
        raise DataError(f"the dataset mixes pixel types ({shown}); convert it to one bit depth")
    return TileSet(**{name: np.concatenate(values) for name, values in parts.items() if values})
