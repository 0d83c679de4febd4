"""Per-cell (instance) and per-class (semantic) metrics for labelled fields, in numpy + scipy.

Label arrays are integer (or bool) images of equal shape: 0 = background, any other non-negative id is
one object; ids need not be consecutive. Points are (N, 2) arrays of (y, x). Empty cases have defined
values (both empty = perfect) and nothing divides 0 by 0. All pairwise overlaps come from one bincount.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

__all__ = [
    "aji",
    "centroids",
    "count_error",
    "instance_scores",
    "match_centroids",
    "match_instances",
    "mean_instance_scores",
    "mean_iou",
    "panoptic_quality",
]

_LUT_LIMIT = 1 << 24  # ids below this are relabelled with a lookup table, larger ones with np.unique


class MeanIoU(TypedDict):
    per_class: dict[str, float | None]
    miou: float


def _as_labels(labels: npt.ArrayLike, name: str) -> np.ndarray:
    """The array, checked to be a non-negative integer (or bool) label image."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biu":
        raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ValueError(f"{name} has negative labels; ids must be >= 0 (0 = background)")
    return arr


def _pair(truth: npt.ArrayLike, pred: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(truth, "truth"), _as_labels(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"truth shape {t.shape} differs from pred shape {p.shape}")
    return t, p


def _dense(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted non-zero ids, flat labels renumbered 1..n with 0 kept as background)."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top < _LUT_LIMIT:
        flat = flat.astype(np.intp, copy=False)
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(top + 1, dtype=np.intp)
        lut[ids] = np.arange(1, len(ids) + 1)
        return ids.astype(np.int64), lut[flat]
    uniq, inverse = np.unique(flat, return_inverse=True)
    has_background = uniq[0] == 0
    dense = inverse.astype(np.intp) + (0 if has_background else 1)
    return uniq[1 if has_background else 0:].astype(np.int64), dense


class _Pairs:
    """Pairwise pixel overlaps of truth objects (rows) and pred objects (columns), from one pass."""

    def __init__(self, dense_t: np.ndarray, n_t: int, dense_p: np.ndarray, n_p: int) -> None:
        counts = np.bincount(dense_t * (n_p + 1) + dense_p, minlength=(n_t + 1) * (n_p + 1))
        table = counts.reshape(n_t + 1, n_p + 1)
        self.area_t = table[1:].sum(axis=1)
        self.area_p = table[:, 1:].sum(axis=0)
        self.inter = table[1:, 1:]
        union = self.area_t[:, None] + self.area_p[None, :] - self.inter  # >= 1: every object has a pixel
        self.iou = self.inter / union

    @classmethod
    def of(cls, truth: npt.ArrayLike, pred: npt.ArrayLike) -> _Pairs:
        t, p = _pair(truth, pred)
        ids_t, dense_t = _dense(t)
        ids_p, dense_p = _dense(p)
        return cls(dense_t, len(ids_t), dense_p, len(ids_p))


def _best_matching(eligible: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (rows, cols): most eligible pairs first, then highest total quality (in [0, 1])."""
    if not eligible.any():
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    from scipy.optimize import linear_sum_assignment  # here: the runtime imports metrics without scipy

    gain = eligible * (1.0 + quality / (2 * min(eligible.shape)))  # quality adds < 1 match in total
    rows, cols = linear_sum_assignment(gain, maximize=True)
    keep = eligible[rows, cols]
    return rows[keep], cols[keep]


def _check_threshold(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den > 0 else empty


def _detection(tp: int, n_true: int, n_pred: int) -> dict[str, float]:
    """Precision, recall, F1 from counts; a zero denominator (nothing to find or claim) scores 1.0."""
    fp, fn = n_pred - tp, n_true - tp
    return {
        "precision": _ratio(tp, tp + fp, 1.0), "recall": _ratio(tp, tp + fn, 1.0),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, 1.0), "tp": tp, "fp": fp, "fn": fn,
    }


def _aji(pairs: _Pairs) -> float:
    n_t, n_p = pairs.inter.shape
    if n_t == 0 or n_p == 0:
        return 1.0 if n_t == n_p else 0.0
    best = pairs.iou.argmax(axis=1)  # ties go to the lower pred id
    hit = pairs.iou[np.arange(n_t), best] > 0
    rows, cols = np.flatnonzero(hit), best[hit]
    inter = pairs.inter[rows, cols]
    used = np.zeros(n_p, dtype=bool)
    used[cols] = True
    union = (pairs.area_t[rows] + pairs.area_p[cols] - inter).sum()
    union += pairs.area_t[~hit].sum() + pairs.area_p[~used].sum()
    return float(inter.sum() / union)


def aji(truth: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017); 1.0 when both are empty, 0.0 when one is.

    Each truth object takes the pred with the highest IoU (ties: lower pred id); unused preds join the union.
    """
    return _aji(_Pairs.of(truth, pred))


def _pq(pairs: _Pairs, iou: float) -> dict[str, float]:
    n_t, n_p = pairs.inter.shape
    if n_t == 0 and n_p == 0:
        return {"pq": 1.0, "dq": 1.0, "sq": 1.0}
    rows, cols = _best_matching(pairs.iou > iou, pairs.iou)
    tp = len(rows)
    dq = _ratio(tp, tp + 0.5 * (n_t - tp) + 0.5 * (n_p - tp), 1.0)
    sq = float(pairs.iou[rows, cols].mean()) if tp else 0.0
    return {"pq": dq * sq, "dq": dq, "sq": sq}


def panoptic_quality(truth: npt.ArrayLike, pred: npt.ArrayLike, iou: float = 0.5) -> dict[str, float]:
    """Panoptic quality (Kirillov et al. 2019): pq = dq * sq, matches are pairs with IoU > `iou`.

    For iou >= 0.5 such matches are unique; below, a one-to-one Hungarian matching picks them.
    Both empty: all 1.0; no true positive: sq = pq = 0.
    """
    return _pq(_Pairs.of(truth, pred), _check_threshold(iou, "iou"))


def _match(pairs: _Pairs, iou: float) -> dict[str, float]:
    eligible = (pairs.iou >= iou) & (pairs.inter > 0)
    rows, _ = _best_matching(eligible, pairs.iou)
    return _detection(len(rows), *pairs.inter.shape)


def match_instances(truth: npt.ArrayLike, pred: npt.ArrayLike, iou: float = 0.5) -> dict[str, float]:
    """Object precision/recall/F1 with tp/fp/fn: one-to-one Hungarian matching of pairs with IoU >= `iou`.

    The matching maximises the number of such pairs, then their total IoU (greedy can do worse).
    """
    return _match(_Pairs.of(truth, pred), _check_threshold(iou, "iou"))


def _as_points(points: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a finite (N, 2) array of (y, x), got shape {arr.shape}")
    return arr


def match_centroids(truth_points: npt.ArrayLike, pred_points: npt.ArrayLike, radius: float) -> dict[str, float]:
    """Precision/recall/F1 with tp/fp/fn of points matched one-to-one within `radius` (inclusive).

    Hungarian matching maximises the number of pairs within reach, then minimises their total distance.
    """
    t, p = _as_points(truth_points, "truth_points"), _as_points(pred_points, "pred_points")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    dist = np.sqrt(((t[:, None, :] - p[None, :, :]) ** 2).sum(axis=2))
    near = dist <= radius
    quality = 1.0 - dist / radius if radius > 0 else near.astype(np.float64)
    rows, _ = _best_matching(near, np.clip(quality, 0.0, 1.0))
    return _detection(len(rows), len(t), len(p))


def _centroids(dense: np.ndarray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """(n, 2) mean (y, x) of labels 1..n of a flat 2-D label image, summed over foreground pixels only."""
    where = np.flatnonzero(dense)
    label = dense[where]
    ys, xs = np.divmod(where, shape[1])
    area = np.bincount(label, minlength=n + 1)[1:]
    sum_y = np.bincount(label, weights=ys, minlength=n + 1)[1:]
    sum_x = np.bincount(label, weights=xs, minlength=n + 1)[1:]
    return np.stack([sum_y, sum_x], axis=1) / area[:, None]


def centroids(labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(ids, points): sorted non-zero ids of a 2-D label image and their (y, x) mean pixel positions."""
    arr = _as_labels(labels, "labels")
    if arr.ndim != 2:
        raise ValueError(f"labels must be a 2-D image, got shape {arr.shape}")
    ids, dense = _dense(arr)
    return ids, _centroids(dense, len(ids), arr.shape)


def mean_iou(truth: npt.ArrayLike, pred: npt.ArrayLike, classes: Sequence[str]) -> MeanIoU:
    """Per-class IoU of semantic label maps, where label value i is `classes[i]`.

    List background (value 0) as classes[0] to score it; values outside the list belong to no class.
    A class in neither map scores None and is left out of `miou`; if no class appears at all, miou = 1.0.
    """
    t, p = _pair(truth, pred)
    k = len(classes)
    if k == 0 or len(set(classes)) != k:
        raise ValueError(f"classes must be non-empty and unique, got {list(classes)}")
    codes = np.minimum(t.ravel(), k).astype(np.intp) * (k + 1) + np.minimum(p.ravel(), k).astype(np.intp)
    table = np.bincount(codes, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
    per_class: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        inter = int(table[c, c])
        union = int(table[c, :].sum() + table[:, c].sum()) - inter
        per_class[name] = inter / union if union else None
    present = [v for v in per_class.values() if v is not None]
    return {"per_class": per_class, "miou": float(np.mean(present)) if present else 1.0}


def count_error(truth: npt.ArrayLike, pred: npt.ArrayLike) -> dict[str, float]:
    """Object count error: absolute |n_pred - n_true| and relative = absolute / max(n_true, 1)."""
    t, p = _pair(truth, pred)
    n_t, n_p = len(_dense(t)[0]), len(_dense(p)[0])
    absolute = abs(n_p - n_t)
    return {"absolute": absolute, "relative": absolute / max(n_t, 1)}


def instance_scores(
    truth: npt.ArrayLike, pred: npt.ArrayLike, radius: float = 12.0, iou: float = 0.5
) -> dict[str, float]:
    """All per-cell scores of one 2-D field; `radius` (pixels) is the centroid-matching reach."""
    t, p = _pair(truth, pred)
    if t.ndim != 2:
        raise ValueError(f"label images must be 2-D, got shape {t.shape}")
    _check_threshold(iou, "iou")
    ids_t, dense_t = _dense(t)
    ids_p, dense_p = _dense(p)
    pairs = _Pairs(dense_t, len(ids_t), dense_p, len(ids_p))
    points_t = _centroids(dense_t, len(ids_t), t.shape)
    points_p = _centroids(dense_p, len(ids_p), p.shape)
    detection = _match(pairs, iou)
    absolute = abs(len(ids_p) - len(ids_t))
    return {
        "aji": _aji(pairs), **_pq(pairs, iou),
        "precision": detection["precision"], "recall": detection["recall"], "f1": detection["f1"],
        "centroid_f1": match_centroids(points_t, points_p, radius)["f1"],
        "count_absolute_error": absolute, "count_relative_error": absolute / max(len(ids_t), 1),
    }


def mean_instance_scores(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each key over per-image score dicts (a key missing from some images: mean of the rest)."""
    keys = sorted({key for item in scores for key in item})
    return {key: float(np.mean([item[key] for item in scores if key in item])) for key in keys}
