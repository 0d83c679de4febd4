"""Per-cell instances from the model's dense heads (mask, distance): numpy + OpenCV only (Jetson runtime).

Instances come from one watershed over the (optionally shrunk) field; this is the reference the compiled
kernels (hep2edge.instances_numba) are tested against. Per-cell records: hep2edge.cell_records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from hep2edge.cell_records import cell_table, int_labels, label_runs
from hep2edge.errors import ContractError
from hep2edge.row_bands import filter_in_bands

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
    labels = int_labels(labels)
    out = np.zeros(labels.shape, np.float32)
    height, width = labels.shape
    table = cell_table(label_runs(labels), width)
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
    m8, small_d, small_m, markers, seeds = shrunk_markers(mask, distance, params)
    if not seeds:
        return np.zeros(m8.shape, np.int32)
    labels = _drop_small(_flood(markers, seeds, small_d, small_m), params.min_area / params.scale**2)
    return _grow(labels, m8, params.scale)


def shrunk_markers(mask: np.ndarray, distance: np.ndarray, params: InstanceParams,
                   tops: Callable[[np.ndarray, int, np.ndarray, int], np.ndarray] | None = None) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """What every flood starts from: the full (H, W) uint8 0/1 mask, the shrunk (h, w) distance (uint8, smoothed)
    and 0/1 mask, and the (h, w) int32 seeds 1..n with n (split at the `tops` of the markers when params.h > 0;
    default peak_tops)."""
    d8 = _distance_u8(distance)
    m8 = _mask_u8(mask, d8.shape)
    small_d, small_m = _shrink(d8, m8, params)
    core = cv2.threshold(small_d, math.floor(params.marker_threshold * 255), 1, cv2.THRESH_BINARY)[1]
    cv2.bitwise_and(core, small_m, dst=core)
    count, markers = components8(core)
    seeds = count - 1
    if params.h > 0 and seeds:
        count, markers = components8((tops or peak_tops)(markers, count, small_d, round(params.h * 255)))
        seeds = count - 1
    return m8, small_d, small_m, markers, seeds


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
        d8 = filter_in_bands(d8, len(kernel) // 2, lambda part: cv2.sepFilter2D(
            part, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101))
    return d8, m8


def peak_tops(markers: np.ndarray, count: int, dist: np.ndarray, h8: int) -> np.ndarray:
    """(h, w) uint8 0/1: each marker (int32 1..count-1) cut to its pixels within h8 of its own peak of `dist`.

    Every 8-connected blob of them is a seed: a marker whose top holds several blobs is split (its h-maxima); the
    rest of each marker lies higher than any path to another seed, so the flood by level gives it back to them.
    """
    inside = markers > 0
    peak = np.zeros(count, np.uint8)
    np.maximum.at(peak, markers[inside], dist[inside])  # same dtypes: numpy's fast path
    floor = np.take(peak.astype(np.int16) - h8, markers)
    tops = (dist >= floor).view(np.uint8)
    tops &= inside.view(np.uint8)
    return tops


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
    return np.take(kept_cells(np.bincount(labels.ravel()), min_area), labels)


def kept_cells(area: np.ndarray, min_area: float) -> np.ndarray:
    """(len(area),) int32 new id per old id 0..: ids with >= min_area px (never 0) numbered 1..n in order, else 0."""
    keep = area >= min_area
    keep[0] = False
    ids = np.zeros(len(area), np.int32)
    ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return ids


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
            parts = components8(crop)[1]
            x, y = contour[0, 0]
            yield top, left, (parts == parts[y - top, x - left]).view(np.uint8), False


def _isolated(boxes: np.ndarray) -> list[bool]:
    """Per (x, y, w, h) box: whether no other box overlaps it (all False for very many boxes)."""
    if len(boxes) > 400:  # the pairwise test grows with the square
        return [False] * len(boxes)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    overlap = ((x0[:, None] < x1) & (x0 < x1[:, None]) & (y0[:, None] < y1) & (y0 < y1[:, None])).sum(axis=1)
    return (overlap == 1).tolist()


def components8(binary: np.ndarray) -> tuple[int, np.ndarray]:
    """cv2 8-connected components (count including background, int32 labels)."""
    return cv2.connectedComponentsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)


# --- input checks ------------------------------------------------------------------------------------------------
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
