"""Per-cell post-processing by name: `numpy` (the reference, numpy + OpenCV: hep2edge.instances) or `numba`
(compiled twins: hep2edge.instances_numba, the `fast` extra). `auto` takes numba where it is installed.

Both give a field's cells from its mask + distance map (`instances`), one record per cell (`records`), or both
at once (`cells`: the numba kernels then sample the cells at full size and measure them in the same pass).
The numba flood has no watershed lines (each contested pixel goes to the cell that reaches it first), so its
cells differ from the reference's along borders by a pixel; records of the same labels are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from types import ModuleType
from typing import Any, Protocol

import cv2
import numpy as np

from hep2edge.cell_records import cell_records, record_inputs, records_from_table
from hep2edge.errors import MissingExtraError
from hep2edge.extras import import_optional
from hep2edge.instances import InstanceParams, components8, instances_from_maps, kept_cells, shrunk_markers
from hep2edge.labels import PATTERNS
from hep2edge.registry import Registry
from hep2edge.row_bands import row_bands, run_parallel

Records = list[dict[str, Any]]


class CellKernels(Protocol):
    """One way to run the per-cell post-processing (shapes as in hep2edge.instances)."""

    name: str

    def instances(self, mask: np.ndarray, distance: np.ndarray, params: InstanceParams) -> np.ndarray: ...

    def records(self, labels: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None = None) -> Records: ...

    def cells(self, mask: np.ndarray, distance: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None,
              params: InstanceParams) -> tuple[np.ndarray, Records]: ...

    def warm_up(self) -> None:
        """Compile or load whatever the first field would (so that it is not slower than the rest)."""


CELL_KERNELS: Registry[Callable[[], CellKernels]] = Registry("cell kernels")
AUTO = "auto"


def cell_kernels(name: str = AUTO) -> CellKernels:
    """The kernels called `name`; `auto`: numba where installed, else numpy. RegistryError lists the names;
    MissingExtraError when numba is asked for by name and not installed."""
    if name.strip().lower() == AUTO:
        try:
            return CELL_KERNELS.get("numba")()
        except MissingExtraError:
            return CELL_KERNELS.get("numpy")()
    return CELL_KERNELS.get(name)()


def kernel_choices() -> tuple[str, ...]:
    """`auto` and every registered name: what a `cell_kernels` setting accepts."""
    return (AUTO, *CELL_KERNELS.names())


@CELL_KERNELS.register("numpy")
class NumpyCellKernels:
    """The reference: hep2edge.instances as it is."""

    name = "numpy"

    def instances(self, mask: np.ndarray, distance: np.ndarray, params: InstanceParams) -> np.ndarray:
        return instances_from_maps(mask, distance, params)

    def records(self, labels: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None = None) -> Records:
        return cell_records(labels, gray, pattern_map)

    def cells(self, mask: np.ndarray, distance: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None,
              params: InstanceParams) -> tuple[np.ndarray, Records]:
        labels = instances_from_maps(mask, distance, params)
        return labels, cell_records(labels, gray, pattern_map)

    def warm_up(self) -> None:
        return None


@CELL_KERNELS.register("numba")
class NumbaCellKernels:
    """The flood, the growth and the per-cell sums compiled; the markers (OpenCV) as in the reference. The
    measuring pass runs on row bands in parallel threads (the kernels release the GIL). Float pattern maps are
    measured by the reference (the compiled vote reads uint8 maps, which is what the runtime sends)."""

    name = "numba"

    def __init__(self) -> None:
        self.jit = _compiled()

    def instances(self, mask: np.ndarray, distance: np.ndarray, params: InstanceParams) -> np.ndarray:
        labels = np.empty(mask.shape, np.int32)
        self._measure(*self._flooded(mask, distance, params), None, None, labels)
        return labels

    def records(self, labels: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None = None) -> Records:
        labels = record_inputs(labels, gray, pattern_map)
        top = int(labels.max(initial=0))
        if top > 4 * labels.size or (pattern_map is not None and pattern_map.dtype != np.uint8):
            return cell_records(labels, gray, pattern_map)  # sparse ids or float maps: the reference
        own = cv2.copyMakeBorder(np.maximum(labels, 0), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        found = self._measure((labels > 0).view(np.uint8), own, top, False, gray, pattern_map, None)
        return _records(found)

    def cells(self, mask: np.ndarray, distance: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None,
              params: InstanceParams) -> tuple[np.ndarray, Records]:
        if pattern_map is not None and pattern_map.dtype != np.uint8:
            labels = self.instances(mask, distance, params)
            return labels, cell_records(labels, gray, pattern_map)
        labels = np.empty(mask.shape, np.int32)
        record_inputs(labels, gray, pattern_map)
        found = self._measure(*self._flooded(mask, distance, params), gray, pattern_map, labels)
        return labels, _records(found)

    def warm_up(self) -> None:
        """One small field per gray type a microscope writes (each compiles its own code: seconds the first time
        on a machine, then loaded from numba's cache in well under a second)."""
        _warm_up()

    def _flooded(self, mask: np.ndarray, distance: np.ndarray, params: InstanceParams) -> tuple[
            np.ndarray, np.ndarray, int, bool]:
        """(full uint8 mask, the shrunk cells 0..n framed by a pixel of 0, n, whether they grow at full size)."""
        m8, small_d, small_m, markers, seeds = shrunk_markers(mask, distance, params, self.jit.peak_tops)
        framed = self.jit.framed_seeds(markers, small_m)
        wait = cv2.copyMakeBorder(cv2.bitwise_not(small_d), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)  # level order
        area = np.zeros(seeds + 1, np.int64)
        if seeds:
            parts = len(row_bands(small_m.shape[0]))
            groups = components8((framed >= 0).view(np.uint8))[1] if parts > 1 else framed
            area = np.sum(run_parallel([partial(self.jit.flood_part, framed, wait, groups, part, parts, seeds)
                                        for part in range(parts)]), axis=0)
        ids = kept_cells(area, params.min_area / params.scale**2)
        lookup = np.concatenate([np.zeros(1, np.int32), ids])  # lookup[label + 1]: -1 (off the mask) and 0 stay 0
        own = np.empty_like(framed)
        run_parallel([partial(self.jit.renumber, framed, lookup, own, top, bottom)
                      for top, bottom in row_bands(framed.shape[0])])
        return m8, own, int(ids.max()), params.scale > 1

    def _measure(self, m8: np.ndarray, own: np.ndarray, cells: int, grow: bool,
                 gray: np.ndarray | None, pattern_map: np.ndarray | None,
                 labels: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per-cell arrays (id, cy, cx, area, top, left, bottom, right, mean, and pattern / probability with a
        map) of the framed cells sampled at the size of `m8` and cut to it; written to `labels` when given."""
        rows, starts = _sampling((own.shape[0] - 2, own.shape[1] - 2), m8.shape)
        planes = np.zeros((0, *m8.shape), np.uint8) if pattern_map is None else np.ascontiguousarray(pattern_map[1:])
        gray = m8 if gray is None else np.ascontiguousarray(
            gray if np.issubdtype(gray.dtype, np.integer) else gray.astype(np.float64))
        out = labels if labels is not None else np.zeros((0, 0), np.int32)
        parts = run_parallel([partial(self.jit.measure_band, own, grow, rows, starts, m8, gray, planes, cells, out,
                                      top, bottom) for top, bottom in row_bands(m8.shape[0])])
        table = np.stack([part[0] for part in parts])
        table = np.concatenate([table[:, :, :3].sum(axis=0), table[:, :, 3:5].min(axis=0),
                                table[:, :, 5:].max(axis=0)], axis=1)
        ids = np.flatnonzero(table[:, 0])
        ids = ids[ids > 0]
        area = table[ids, 0]
        found = {"id": ids, "area": area, "cy": table[ids, 1] / area, "cx": table[ids, 2] / area,
                 "top": table[ids, 3], "left": table[ids, 4], "bottom": table[ids, 5], "right": table[ids, 6],
                 "mean": np.sum([part[1] for part in parts], axis=0)[ids] / area}
        if len(planes):
            votes = np.sum([part[2] for part in parts], axis=0)
            chosen = votes[:, :len(PATTERNS)].argmax(axis=1)  # ties: the earlier pattern
            sums = run_parallel([partial(self.jit.chosen_sums, planes, m8, chosen, part[3]) for part in parts])
            found["pattern"] = chosen[ids]
            found["probability"] = np.sum(sums, axis=0)[ids] / area / 255.0
        return found


@lru_cache(maxsize=1)
def _warm_up() -> None:
    """Once per process."""
    kernels = NumbaCellKernels()
    mask = np.zeros((96, 128), np.uint8)
    cv2.circle(mask, (40, 48), 20, 1, -1)
    cv2.circle(mask, (76, 48), 20, 1, -1)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    distance = (distance * (255 / max(float(distance.max()), 1.0))).astype(np.uint8)
    planes = np.zeros((len(PATTERNS) + 1, *mask.shape), np.uint8)
    for gray in (mask, mask.astype(np.uint16)):
        kernels.cells(mask, distance, gray, planes, InstanceParams(min_area=10))
        kernels.cells(mask, distance, gray, None, InstanceParams(min_area=10, scale=1))


def _compiled() -> ModuleType:
    return import_optional("hep2edge.instances_numba")


def _records(found: dict[str, np.ndarray]) -> Records:
    return records_from_table(found, found.get("pattern"), found.get("probability"))


@lru_cache(maxsize=8)
def _sampling(small: tuple[int, int], full: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For nearest sampling of (h, w) at (H, W) exactly as cv2.resize INTER_NEAREST: the source row of each full
    row (H,), and the first full column of each source column (w + 1,), the last being W."""
    rows = cv2.resize(np.arange(small[0], dtype=np.int32)[:, None], (1, full[0]),
                      interpolation=cv2.INTER_NEAREST).ravel()
    cols = cv2.resize(np.arange(small[1], dtype=np.int32)[None, :], (full[1], 1),
                      interpolation=cv2.INTER_NEAREST).ravel()
    return rows.astype(np.int64), np.searchsorted(cols, np.arange(small[1] + 1)).astype(np.int64)
