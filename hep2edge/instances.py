"""Per-cell instances from the model's dense heads (mask, distance, pattern): numpy + OpenCV only (Jetson runtime).

Instances come from one watershed over the (optionally shrunk) field; per-cell numbers from the label image's row
runs and one histogram of the pattern map per cell (vectorised passes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from hep2edge.errors import ContractError
from hep2edge.labels import PATTERNS

_KERNEL = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class InstanceParams:
    """How distance-map peaks become cells; carried in the model contract (checked when made)."""

    # defaults: a sweep on 7 held-out synthetic fields (seed 2000, not the benchmark's test set) with bench_cells'
    # demo-size model trained 60 epochs (distance weight 10): AJI 0.774 / count error 0.097 at 0.5 / 0.1 / 6 px,
    # 0.780 / 0.071 at 0.45 / 0.1 / 5 px. A sharper distance head wants less smoothing (values live per model)
    marker_threshold: float = 0.45  # a marker is where the distance map exceeds this level (0..1)
    h: float = 0.1  # a marker splits where its pixels within h of its peak form several blobs; 0: no split
    min_area: int = 150  # px; smaller objects are removed (synthetic cells: 1,250-3,800 px)
    smooth: float = 5.0  # px (full size): Gaussian sigma of the distance map before markers (0: none)
    scale: int = 2  # work on maps shrunk this many times per side (2: ~4x faster; for cells >= 20 px across)

    def __post_init__(self) -> None:
        problem = _params_problem(self)
        if problem:
            raise ContractError(f"instance params: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceParams:
        """Parse stored params (missing fields take their defaults); ContractError names a bad field."""
        if not isinstance(data, Mapping):
            raise ContractError("instance params: not a JSON object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ContractError(f"instance params: unknown fields {unknown}")
        return cls(**data)


def _params_problem(params: InstanceParams) -> str:
    """'' when the params are valid, else '<field> must be ..., got ...'."""
    for name in ("marker_threshold", "h"):
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
                0 <= value < 1):
            return f"{name} must be a number in [0, 1), got {value!r}"
    for name, least in (("min_area", 0), ("scale", 1)):
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            return f"{name} must be a whole number >= {least}, got {value!r}"
    smooth = params.smooth
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float, np.integer, np.floating)) or not (
            0 <= smooth <= 50):
        return f"smooth must be a number of pixels in [0, 50], got {smooth!r}"
    return ""


# --- training target -------------------------------------------------------------------------------------------
def distance_target(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32 0..1: per cell, the Euclidean distance to the nearest pixel not in that cell over its maximum.

    Exact per cell (touching cells are separated by their shared border); outside the image is not background, so
    a cell cut by a tile edge does not dip there (no false valley at tile seams); background is 0.
    """
    labels = _labels(labels)
    out = np.zeros(labels.shape, np.float32)
    height, width = labels.shape
    table = _cell_table(_runs(labels), width)
    for cell, top, left, bottom, right in zip(*(table[k].tolist() for k in ("id", "top", "left", "bottom", "right"))):
        top, left, bottom, right = max(top - 1, 0), max(left - 1, 0), min(bottom + 1, height), min(right + 1, width)
        own = labels[top:bottom, left:right] == cell
        dist = cv2.distanceTransform(own.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        peak = float(dist.max())
        dist = own.astype(np.float32) if peak > 1e30 else dist / np.float32(peak)  # >1e30: cell fills the image
        np.copyto(out[top:bottom, left:right], dist, where=own)
    return out


# --- instances ---------------------------------------------------------------------------------------------------
def connected_instances(mask: np.ndarray, min_area: int) -> np.ndarray:
    """(H, W) int32 labels 1..n of the mask's 8-connected components of >= min_area px (no distance head)."""
    m8 = _mask_u8(mask)
    out = np.zeros(m8.shape, np.int32)
    count = 0
    for top, left, region, _ in _clusters(m8):
        if cv2.countNonZero(region) >= min_area:
            count += 1
            np.copyto(out[top:top + region.shape[0], left:left + region.shape[1]], count, where=region.view(bool))
    return out


def instances_from_maps(mask: np.ndarray, distance: np.ndarray, params: InstanceParams) -> np.ndarray:
    """(H, W) int32 labels 1..n: distance-map markers, one marker-controlled watershed inside the mask.

    `distance`: float 0..1 or uint8 0..255 (the same map, /255). Works on the maps shrunk by `params.scale` (area
    mean) and the distance smoothed by `params.smooth`: markers are the 8-connected components of distance >
    marker_threshold inside the mask, each split when h > 0 and its pixels within h of its peak form several
    blobs; the watershed floods by level from them, so a mask cluster without a marker is dropped. Cells under
    min_area (counted on the shrunk maps, x scale**2) go; the labels come back at full size inside the full mask.
    """
    d8 = _distance_u8(distance)
    m8 = _mask_u8(mask, d8.shape)
    small_d, small_m = _shrink(d8, m8, params)
    core = cv2.threshold(small_d, math.floor(params.marker_threshold * 255), 1, cv2.THRESH_BINARY)[1]
    cv2.bitwise_and(core, small_m, dst=core)
    count, markers = _components(core)
    seeds = count - 1
    if params.h > 0 and seeds:
        seeds, markers = _peak_tops(markers, count, small_d, round(params.h * 255))
    if not seeds:
        return np.zeros(d8.shape, np.int32)
    labels = _drop_small(_flood(markers, seeds, small_d, small_m), params.min_area / params.scale**2)
    return _grow(labels, m8, params.scale)


def _shrink(d8: np.ndarray, m8: np.ndarray, params: InstanceParams) -> tuple[np.ndarray, np.ndarray]:
    """The distance (area mean, then smoothed) and the 0/1 mask (most of each block) at 1/scale of the size."""
    if params.scale > 1:
        size = (max(1, d8.shape[1] // params.scale), max(1, d8.shape[0] // params.scale))
        d8 = cv2.resize(d8, size, interpolation=cv2.INTER_AREA)
        m8 = cv2.threshold(cv2.resize(m8 * np.uint8(255), size, interpolation=cv2.INTER_AREA), 127, 1,
                           cv2.THRESH_BINARY)[1]
    if params.smooth > 0:  # GaussianBlur's kernel, applied by sepFilter2D: ~2x faster on uint8 (not bit-exact)
        sigma = params.smooth / params.scale
        kernel = cv2.getGaussianKernel(max(3, round(sigma * 6 + 1) | 1), sigma)
        d8 = cv2.sepFilter2D(d8, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    return d8, m8


def _peak_tops(markers: np.ndarray, count: int, dist: np.ndarray, h8: int) -> tuple[int, np.ndarray]:
    """Each marker cut to its pixels within h8 of its own peak; every 8-connected blob of them is a seed.

    (seeds, int32 seeds 1..n). A marker whose top holds several blobs is split (its h-maxima); the rest of each
    marker lies higher than any path to another seed, so the flood by level gives it back to its own blobs.
    """
    inside = markers > 0
    peak = np.zeros(count, np.uint8)
    np.maximum.at(peak, markers[inside], dist[inside])  # same dtypes: numpy's fast path
    floor = np.take(peak.astype(np.int16) - h8, markers)
    tops = (dist >= floor).view(np.uint8)
    tops &= inside.view(np.uint8)
    blobs, seeds = _components(tops)
    return blobs - 1, seeds


def _flood(markers: np.ndarray, seeds: int, dist: np.ndarray, m8: np.ndarray) -> np.ndarray:
    """(h, w) int32 cells 1..seeds: cv2.watershed by level from the markers; off the mask is one more marker.

    Mask pixels left unlabelled next to a cell (the 1-px watershed lines) go to the largest neighbouring label.
    """
    outside = seeds + 1
    seeded = cv2.copyMakeBorder(markers, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=outside)
    inner = seeded[1:-1, 1:-1]
    np.copyto(inner, outside, where=m8 == 0)
    cv2.watershed(cv2.copyMakeBorder(_relief(dist, m8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(255, 255, 255)),
                  seeded)
    labels = np.where((inner > 0) & (inner < outside), inner, 0).astype(np.int32)
    gaps = (labels == 0) & (m8 > 0)  # lines, and mask corners the outside marker reached first
    if gaps.any():
        labels[gaps] = _dilate_labels(labels)[gaps]
    return labels


def _grow(labels: np.ndarray, m8: np.ndarray, scale: int) -> np.ndarray:
    """Labels worked out on shrunk maps -> (H, W) inside the full mask: each cell first grows by one shrunk pixel
    into unlabelled ground (the shrunk mask's edge), then is upsampled (nearest) and cut to the full mask."""
    if labels.shape == m8.shape:
        return labels
    np.copyto(labels, _dilate_labels(labels), where=labels == 0)
    labels = cv2.resize(labels, (m8.shape[1], m8.shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.multiply(labels, m8, out=labels)


def _dilate_labels(labels: np.ndarray) -> np.ndarray:
    """3x3 dilation (largest label wins) of int32 labels, exact below 2**24 (float32 morphology)."""
    return cv2.dilate(labels.astype(np.float32), _KERNEL).astype(np.int32)


def _drop_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Cells of >= min_area px, renumbered 1..n in the order of their old ids."""
    area = np.bincount(labels.ravel())
    keep = area >= min_area
    keep[0] = False
    ids = np.zeros(len(area), np.int32)
    ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return np.take(ids, labels)


def _relief(d8: np.ndarray, m8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image for cv2.watershed that makes it flood by level (Meyer's), not by gradient.

    cv2.watershed floods in order of the largest channel difference between 4-neighbours. With the level
    f = 255 - distance on alternate pixels of channels 0 and 1 (a checkerboard), that difference is
    max(f(p), f(q)); channel 2 is 255 off the mask, so no marker floods across the background.
    """
    level = cv2.bitwise_not(d8)
    board = np.tile(np.array([[255, 0], [0, 255]], np.uint8), ((d8.shape[0] + 1) // 2, (d8.shape[1] + 1) // 2))
    board = board[:d8.shape[0], :d8.shape[1]]
    planes = [cv2.bitwise_and(level, board), cv2.bitwise_and(level, cv2.bitwise_not(board))]
    return cv2.merge([*planes, cv2.threshold(m8, 0, 255, cv2.THRESH_BINARY_INV)[1]])


def _clusters(m8: np.ndarray) -> Iterator[tuple[int, int, np.ndarray, bool]]:
    """(top, left, uint8 0/1 crop, alone in its box) per 8-connected component of a 0/1 mask, in raster order."""
    contours, hierarchy = cv2.findContours(m8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outer = sorted((c for c, h in zip(contours, hierarchy[0] if contours else []) if h[3] < 0),
                   key=lambda c: (int(c[0, 0, 1]), int(c[0, 0, 0])))
    boxes = np.array([cv2.boundingRect(c) for c in outer], np.int64).reshape(-1, 4)
    alone = _isolated(boxes)
    for contour, (left, top, width, height), single in zip(outer, boxes.tolist(), alone):
        crop = m8[top:top + height, left:left + width]
        if single:  # nothing else in the box (holes hold no other cluster either)
            yield top, left, crop, True
        else:  # keep the component this contour starts on
            parts = _components(crop)[1]
            x, y = contour[0, 0]
            yield top, left, (parts == parts[y - top, x - left]).view(np.uint8), False


def _isolated(boxes: np.ndarray) -> list[bool]:
    """Per (x, y, w, h) box: whether no other box overlaps it (all False for very many boxes)."""
    if len(boxes) > 400:  # the pairwise test grows with the square
        return [False] * len(boxes)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    overlap = ((x0[:, None] < x1) & (x0 < x1[:, None]) & (y0[:, None] < y1) & (y0 < y1[:, None])).sum(axis=1)
    return (overlap == 1).tolist()


def _components(binary: np.ndarray) -> tuple[int, np.ndarray]:
    """cv2 8-connected components (count including background, int32 labels)."""
    return cv2.connectedComponentsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)


# --- per-cell records --------------------------------------------------------------------------------------------
def cell_records(labels: np.ndarray, gray: np.ndarray, pattern_map: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One dict per cell id (ascending): id, centroid [y, x], area, bbox [top, left, bottom, right), mean_intensity.

    With `pattern_map` ((8, H, W) probabilities, channel 0 background; float or uint8 /255): `pattern`, the
    majority per-pixel argmax of channels 1..7 (ties: the earlier pattern), and `pattern_probability`, the mean
    probability of that pattern over the cell. Area, centroid, box and intensity come from the label runs, the
    pattern from one per-pixel argmax of the map (OpenCV) histogrammed per cell.
    """
    labels = _labels(labels)
    if gray.shape != labels.shape:
        raise ValueError(f"gray image {gray.shape} does not match labels {labels.shape}")
    if pattern_map is not None and pattern_map.shape != (len(PATTERNS) + 1, *labels.shape):
        raise ValueError(f"pattern map {pattern_map.shape} is not ({len(PATTERNS) + 1}, {labels.shape[0]}, "
                         f"{labels.shape[1]})")
    runs = _runs(labels)
    table = _cell_table(runs, labels.shape[1])
    table["mean"] = np.bincount(table["inv"], _run_sums(gray, runs)) / table["area"]
    keys = ("id", "cy", "cx", "area", "top", "left", "bottom", "right", "mean")
    records = [{"id": cell, "centroid": [round(cy, 1), round(cx, 1)], "area": int(area),
                "bbox": [top, left, bottom, right], "mean_intensity": round(mean, 1)}
               for cell, cy, cx, area, top, left, bottom, right, mean in zip(*(table[k].tolist() for k in keys))]
    if pattern_map is not None and records:
        chosen, probability = _cell_patterns(labels, table, runs, np.ascontiguousarray(pattern_map))
        for record, pattern, value in zip(records, chosen.tolist(), probability.tolist()):
            record.update({"pattern": PATTERNS[pattern], "pattern_probability": round(value, 4)})
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


def _runs(labels: np.ndarray) -> dict[str, np.ndarray]:
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


def _cell_table(runs: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
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


# --- input checks ------------------------------------------------------------------------------------------------
def _labels(labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected an (H, W) integer label image, got {labels.dtype} {labels.shape}")
    if labels.dtype != np.int32:
        labels = labels.astype(np.int32)
    return labels


def _distance_u8(distance: np.ndarray) -> np.ndarray:
    """The distance map as uint8 0..255 (float 0..1 is scaled, rounded and clipped)."""
    if distance.ndim != 2:
        raise ValueError(f"expected an (H, W) distance map, got shape {distance.shape}")
    if distance.dtype == np.uint8:
        return np.ascontiguousarray(distance)
    if not np.issubdtype(distance.dtype, np.floating):
        raise ValueError(f"distance map must be float 0..1 or uint8 0..255, got {distance.dtype}")
    positive = cv2.threshold(distance.astype(np.float32, copy=False), 0, 0, cv2.THRESH_TOZERO)[1]  # NaN -> 0
    return cv2.convertScaleAbs(positive, alpha=255.0)


def _mask_u8(mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The mask as contiguous uint8 0/1 (nonzero = cell)."""
    if mask.ndim != 2 or (shape is not None and mask.shape != shape):
        raise ValueError(f"mask {mask.shape} must be (H, W){f' like the distance map {shape}' if shape else ''}")
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask).view(np.uint8)
    return (mask > 0).view(np.uint8)
