"""Per-pixel targets of the dense heads, made once per whole image and then cut on its tile grid like the mask.

- instances: the image's label image (`{stem}_Labels.tif`), else the 8-connected components of its mask of at
  least `InstanceParams().min_area` px; kept per tile as uint16 ids (0 = background), renumbered per tile only
  when an image has more ids than uint16 holds. Label pixels outside the mask are dropped (the mask is the truth
  for cell vs background).
- distance: `hep2edge.instances.distance_target` of the whole image (so a cell cut by a tile edge keeps its
  own maximum), stored as uint8 = round(255 * d): at most 1/510 from the float target, a quarter of the memory.
- pattern classes: 0 on background, 1 + the specimen's pattern on cell pixels, 1 + the cell's own class where the
  dataset's cells.csv gives one (uint8).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hep2edge.imageio import read_labels
from hep2edge.instances import InstanceParams, connected_instances, distance_target
from hep2edge.tiling import TileGrid, extract_tiles

DISTANCE_SCALE = 255.0  # uint8 distance target = round(DISTANCE_SCALE * d)
CellClasses = Mapping[int, int]  # cell id -> pattern index (one image's rows of cells.csv)


@dataclass(frozen=True)
class DenseNeeds:
    """Which per-pixel targets the tile set carries; instances whenever a head is on (cell metrics need them)."""

    distance: bool = False
    pattern_map: bool = False
    min_area: int = InstanceParams().min_area  # components of a binary mask smaller than this are no cell

    @property
    def any(self) -> bool:
        return self.distance or self.pattern_map


def instance_labels(labels_path: Path | None, mask: np.ndarray, min_area: int) -> np.ndarray:
    """(H, W) int32 cell ids: the label image (outside the mask zeroed), else connected components of the mask."""
    if labels_path is None:
        return connected_instances(mask, min_area)
    return np.where(mask.astype(bool), read_labels(labels_path, (mask.shape[0], mask.shape[1])), np.int32(0))


def pattern_classes(mask: np.ndarray, labels: np.ndarray, pattern: int, cells: CellClasses) -> np.ndarray:
    """(H, W) uint8: 0 background, 1 + `pattern` on cell pixels, 1 + the cell's class for cells in `cells`."""
    out = np.where(mask.astype(bool), np.uint8(1 + pattern), np.uint8(0))
    by_class: dict[int, list[int]] = {}
    for cell, cls in cells.items():
        if cls != pattern:
            by_class.setdefault(int(cls), []).append(int(cell))
    for cls, ids in by_class.items():
        out[np.isin(labels, ids) & (out > 0)] = 1 + cls
    return out


def tile_ids(tiles: np.ndarray) -> np.ndarray:
    """(N, t, t) int32 ids -> uint16, renumbered per tile (np.unique order) only when some id exceeds 65535."""
    if not tiles.size or int(tiles.max()) <= np.iinfo(np.uint16).max:
        return tiles.astype(np.uint16)
    out = np.empty(tiles.shape, np.uint16)
    for i, tile in enumerate(tiles):
        out[i] = np.unique(tile, return_inverse=True)[1].reshape(tile.shape)  # 0 stays 0: it is the least id
    return out


def cut_dense_targets(labels_path: Path | None, mask: np.ndarray, grid: TileGrid, needs: DenseNeeds, pattern: int,
                      cells: CellClasses) -> dict[str, np.ndarray]:
    """One image's targets cut on `grid`: "instances" (N,t,t) uint16, ["distance"] uint8, ["classes"] uint8."""
    labels = instance_labels(labels_path, mask, needs.min_area)
    out = {"instances": tile_ids(extract_tiles(labels, grid))}
    if needs.distance:
        scaled = np.rint(distance_target(labels) * DISTANCE_SCALE).astype(np.uint8)
        out["distance"] = extract_tiles(scaled, grid)
    if needs.pattern_map:
        out["classes"] = extract_tiles(pattern_classes(mask, labels, pattern, cells), grid)
    return out
