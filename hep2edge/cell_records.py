"""One record per cell of a label image: area, centroid, box, mean intensity and the majority pattern of the
model's pattern map (numpy + OpenCV: the reference of the compiled kernels in hep2edge.instances_numba).

Numbers come from the label image's row runs and one histogram of the pattern map per cell (vectorised passes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from hep2edge.labels import PATTERNS


# --- per-cell records --------------------------------------------------------------------------------------------
def cell_records(labels: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One dict per cell id (ascending): id, centroid [y, x], area, bbox [top, left, bottom, right), mean_intensity.

    With `pattern_map` ((8, H, W) probabilities, channel 0 background; float or uint8 /255): `pattern`, the
    majority per-pixel argmax of channels 1..7 (ties: the earlier pattern), and `pattern_probability`, the mean
    probability of that pattern over the cell. Area, centroid, box and intensity come from the label runs, the
    pattern from one per-pixel argmax of the map (OpenCV) histogrammed per cell.
    """
    labels = record_inputs(labels, gray, pattern_map)
    runs = label_runs(labels)
    table = cell_table(runs, labels.shape[1])
    table["mean"] = np.bincount(table["inv"], _run_sums(gray, runs)) / table["area"]
    if pattern_map is None or not len(table["id"]):
        return records_from_table(table)
    chosen, probability = _cell_patterns(labels, table, runs, np.ascontiguousarray(pattern_map))
    return records_from_table(table, chosen, probability)


def record_inputs(labels: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None) -> np.ndarray:
    """The labels as int32 once the gray image and pattern map are checked against them (ValueError)."""
    labels = int_labels(labels)
    if gray.shape != labels.shape:
        raise ValueError(f"gray image {gray.shape} does not match labels {labels.shape}")
    if pattern_map is not None and pattern_map.shape != (len(PATTERNS) + 1, *labels.shape):
        raise ValueError(f"pattern map {pattern_map.shape} is not ({len(PATTERNS) + 1}, {labels.shape[0]}, "
                         f"{labels.shape[1]})")
    return labels


def records_from_table(table: Mapping[str, np.ndarray], chosen: np.ndarray | None = None,
                       probability: np.ndarray | None = None) -> list[dict[str, Any]]:
    """cell_records' dicts from per-cell arrays (id, cy, cx, area, top, left, bottom, right, mean) and, when
    given, each cell's pattern index 0..6 and its mean probability 0..1."""
    columns = (table["id"].tolist(), np.round(table["cy"], 1).tolist(), np.round(table["cx"], 1).tolist(),
               table["area"].astype(np.int64).tolist(),
               np.stack([table[k] for k in ("top", "left", "bottom", "right")], axis=1).tolist(),
               np.round(table["mean"], 1).tolist())  # numpy rounds and lists all cells at once (~4x faster)
    records = [{"id": cell, "centroid": [cy, cx], "area": area, "bbox": box, "mean_intensity": mean}
               for cell, cy, cx, area, box, mean in zip(*columns)]
    if chosen is not None and probability is not None:
        for record, pattern, value in zip(records, chosen.tolist(), np.round(probability, 4).tolist()):
            record["pattern"], record["pattern_probability"] = PATTERNS[pattern], value
    return records


def _cell_patterns(labels: np.ndarray, table: dict[str, np.ndarray], runs: dict[str, np.ndarray],
                   probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of `table`: the majority per-pixel pattern (0..6, ties to the earlier) and its mean probability
    (0..1) over the cell, from a (cell, per-pixel argmax) histogram and the chosen planes' sums over the runs."""
    votes = _pattern_votes(_dense_ids(labels, table["id"]), _first_argmax(probs[1:]), len(table["id"]))
    chosen = votes[:, :len(PATTERNS)].argmax(axis=1)
    sums = np.zeros(len(chosen))
    for pattern in np.unique(chosen).tolist():
        cells = chosen == pattern
        per_cell = np.bincount(table["inv"], _run_sums(probs[1 + pattern], runs), minlength=len(chosen))
        sums[cells] = per_cell[cells]
    return chosen, sums / table["area"] / (255.0 if probs.dtype == np.uint8 else 1.0)


def _pattern_votes(ids: np.ndarray, first: np.ndarray, cells: int) -> np.ndarray:
    """(cells, K + 1) pixel counts of cell ids 1..cells x per-pixel argmax 0..K (K: no pattern matched).

    One histogram of cell * (K + 1) + argmax: OpenCV's uint16 histogram, ~10x numpy's bincount, while the
    codes fit in uint16 (8,191 cells for 7 patterns).
    """
    k = len(PATTERNS) + 1
    bins = (cells + 1) * k
    if bins <= 1 << 16:
        code = ids.astype(np.uint16) * np.uint16(k) + first
        counts = cv2.calcHist([code], [0], None, [bins], [0, bins]).ravel().astype(np.int64)
    else:
        counts = np.bincount((ids * k + first).ravel(), minlength=bins)
    return counts.reshape(cells + 1, k)[1:]


def _dense_ids(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The labels renumbered 1..n in the order of `ids` (their sorted positive values); as they are if already so.
    Negative labels are background, as in the records."""
    if labels.min() < 0:
        labels = np.maximum(labels, 0)
    if ids[-1] == len(ids):
        return labels
    if ids[-1] < 4 * labels.size:
        lookup = np.zeros(int(ids[-1]) + 1, np.int32)
        lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
        return np.take(lookup, labels)
    return np.where(labels > 0, np.searchsorted(ids, labels) + 1, 0).astype(np.int32)


def _first_argmax(probs: np.ndarray) -> np.ndarray:
    """(H, W) uint8: per pixel, the index of the largest of the (K, H, W) planes, ties to the first (as argmax).

    OpenCV max/compare per plane: several times faster than numpy's argmax over the first axis.
    """
    best = probs[0].copy()
    for plane in probs[1:]:
        cv2.max(best, plane, dst=best)
    code = np.zeros(best.shape, np.uint8)  # K - index of the first plane that reaches the maximum
    for k, plane in enumerate(probs):
        hit = cv2.compare(plane, best, cv2.CMP_EQ)
        cv2.max(code, cv2.threshold(hit, 0, len(probs) - k, cv2.THRESH_BINARY)[1], dst=code)
    return len(probs) - code  # K where no plane matched (NaN): counted for no pattern


def pattern_cell_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Cells per pattern name (all 7 present, 0 when none); records without a pattern are not counted."""
    counts = dict.fromkeys(PATTERNS, 0)
    for record in records:
        if record.get("pattern") in counts:
            counts[record["pattern"]] += 1
    return counts


def label_runs(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Row runs of equal nonzero label, in raster order: label, row, start, stop (int64 arrays, stop exclusive)."""
    height, width = labels.shape
    change = cv2.findNonZero((labels[:, 1:] != labels[:, :-1]).view(np.uint8))
    xy = np.zeros((0, 2), np.int64) if change is None else change.reshape(-1, 2).astype(np.int64)
    starts = np.concatenate([np.arange(height, dtype=np.int64) * width, xy[:, 1] * width + xy[:, 0] + 1])
    starts.sort()
    stops = np.append(starts[1:], height * width)
    label = labels.ravel()[starts].astype(np.int64)
    kept = label > 0
    row = starts[kept] // width
    return {"label": label[kept], "row": row, "start": starts[kept] - row * width, "stop": stops[kept] - row * width}


def cell_table(runs: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """Per cell id (ascending): area, centroid cy/cx, box top/left/bottom/right; `inv` maps runs to cells."""
    ids, first, inv = np.unique(runs["label"], return_index=True, return_inverse=True)
    row, start, stop = runs["row"], runs["start"], runs["stop"]
    length = stop - start
    area = np.bincount(inv, length, minlength=len(ids))
    bottom, right, left = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64), np.full(len(ids), width)
    np.maximum.at(bottom, inv, row + 1)
    np.maximum.at(right, inv, stop)
    np.minimum.at(left, inv, start)
    with np.errstate(invalid="ignore"):
        cy = np.bincount(inv, row * length, minlength=len(ids)) / area
        cx = np.bincount(inv, (start + stop - 1) * length, minlength=len(ids)) / (2 * area)
    return {"id": ids, "inv": inv, "area": area, "cy": cy, "cx": cx, "top": row[first], "left": left,
            "bottom": bottom, "right": right}


def _run_sums(plane: np.ndarray, runs: dict[str, np.ndarray]) -> np.ndarray:
    """Sum of `plane` over each run, from its integral image (float64; uint8 sums in int32 while they fit)."""
    if plane.dtype not in (np.uint8, np.float32, np.float64):
        plane = plane.astype(np.float32)
    exact32 = plane.dtype == np.uint8 and plane.size * 255 < 2**31
    table = cv2.integral(plane, sdepth=cv2.CV_32S if exact32 else cv2.CV_64F)
    row, start, stop = runs["row"], runs["start"], runs["stop"]
    sums = (table[row + 1, stop] - table[row + 1, start]) - (table[row, stop] - table[row, start])
    return sums.astype(np.float64)


def int_labels(labels: np.ndarray) -> np.ndarray:
    """The (H, W) integer label image as int32 (ValueError for anything else)."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected an (H, W) integer label image, got {labels.dtype} {labels.shape}")
    if labels.dtype != np.int32:
        labels = labels.astype(np.int32)
    return labels
