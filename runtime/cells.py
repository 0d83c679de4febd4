"""Per-cell analysis on the writer threads: the field's instances from its mask (+ distance map), one record per
cell (hep2edge.instances), and the `cells` section of the result document.

`--cells`: auto (instances from the distance head where the model has one, else none), distance (the head is
required), components (connected components of the mask: any model, touching cells stay merged), off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hep2edge.cell_kernels import CellKernels
from hep2edge.cell_records import pattern_cell_counts
from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.instances import InstanceParams, connected_instances
from hep2edge.runtime.results import TileOutputs
from hep2edge.runtime.settings import CELL_MODES, check_choice
from hep2edge.tiling import TileGrid, stitch_inner_channels


def cell_method(mode: str, contract: ModelContract, source: str) -> str | None:
    """How cells are found for `--cells mode` with this model: 'distance', 'components' or None (no cells)."""
    check_choice("cells", mode, CELL_MODES)
    has_distance = "distance" in contract.cell_outputs
    if mode == "distance" and not has_distance:
        raise ConfigError(f"`cells` distance: {source} has no distance head (train with --instances and "
                          "re-export), or use `cells` components")
    if mode == "auto":
        return "distance" if has_distance else None
    return None if mode == "off" else mode


def to_u8(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in 0..1 -> uint8 0..255 (what crosses from the model to the writers); uint8 passes as is."""
    if probabilities.dtype == np.uint8:
        return probabilities
    return (np.clip(np.asarray(probabilities, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def stitch_dense(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, C, t, t) uint8 per-tile maps -> (C, H, W) uint8, each pixel from the tile it lies deepest in (overlaps
    split at their middle: a tile's rim, which sees least context, is not used where a neighbour covers it)."""
    return stitch_inner_channels(to_u8(tiles), grid)


def full_dense(outputs: TileOutputs, grid: TileGrid) -> dict[str, np.ndarray]:
    """The per-cell heads as (C, H, W) uint8 maps: a whole-field pass's as they are, tile maps stitched."""
    if outputs.field_mask is not None:
        return outputs.dense
    return {name: stitch_dense(tiles, grid) for name, tiles in outputs.dense.items()}


@dataclass(frozen=True)
class CellAnalysis:
    """One field's cells: the (H, W) int32 instance labels and a record per cell; `kernels` computed them."""

    method: str
    kernels: str
    labels: np.ndarray
    records: list[dict[str, Any]]

    def section(self, with_patterns: bool) -> dict[str, Any]:
        """The result document's `cells`: count, how they were found, per-pattern counts, the per-cell list."""
        section: dict[str, Any] = {"count": len(self.records), "method": self.method, "kernels": self.kernels}
        if with_patterns:
            section["patterns"] = pattern_cell_counts(self.records)
        section["items"] = self.records
        return section


def analyse_cells(method: str, mask: np.ndarray, dense: dict[str, np.ndarray], gray: np.ndarray,
                  params: InstanceParams, kernels: CellKernels) -> CellAnalysis:
    """Cells of one field: `mask` (H, W) 0/1 or 0/255, `dense` (C, H, W) uint8 maps by output name."""
    pattern_map = dense.get("pattern_map")
    if method == "distance":
        labels, records = kernels.cells(mask, dense["distance"][0], gray, pattern_map, params)
    else:
        labels = connected_instances(mask, params.min_area)
        records = kernels.records(labels, gray, pattern_map)
    return CellAnalysis(method, kernels.name, labels, records)
