"""Task metrics in numpy, shared by training, export verification, the runtime and benchmarks.

Levels: `patch` (each tile), `image` (mean of its tiles' probabilities; segmentation counts summed),
`patient` (mean of its images' probabilities). Always say which level a figure is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hep2edge.instance_metrics import aji as aji  # per-cell metrics (issue 12), re-exported here
from hep2edge.instance_metrics import centroids as centroids
from hep2edge.instance_metrics import count_error as count_error
from hep2edge.instance_metrics import instance_scores as instance_scores
from hep2edge.instance_metrics import match_centroids as match_centroids
from hep2edge.instance_metrics import match_instances as match_instances
from hep2edge.instance_metrics import mean_instance_scores as mean_instance_scores
from hep2edge.instance_metrics import mean_iou as mean_iou
from hep2edge.instance_metrics import panoptic_quality as panoptic_quality

LEVELS = ("patch", "image", "patient")


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    pred, target = pred.astype(bool), target.astype(bool)
    denom = pred.sum() + target.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(pred, target).sum() / denom)


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    pred, target = pred.astype(bool), target.astype(bool)
    union = np.logical_or(pred, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, target).sum() / union)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows = true class, columns = predicted."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else float("nan")


def mean_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean over the classes present in y_true of each class's recall."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(matrix)[present] / support[present]).mean())


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan with one class only."""
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def segmentation_counts(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W) boolean masks -> (N, 5) int64 [intersection, pred, target, correct pixels, pixels].

    `valid` (N, H, W) bool marks the pixels inside the image: the pad of a tile that overhangs a small
    image counts nowhere, neither as foreground nor in pixel accuracy.
    """
    pred = pred.astype(bool).reshape(len(pred), -1)
    target = target.astype(bool).reshape(len(target), -1)
    inside = np.ones_like(pred) if valid is None else valid.astype(bool).reshape(len(pred), -1)
    pred, target = pred & inside, target & inside
    inter = np.logical_and(pred, target).sum(1)
    correct = ((pred == target) & inside).sum(1)
    size = inside.sum(1)
    return np.stack([inter, pred.sum(1), target.sum(1), correct, size], axis=1).astype(np.int64)


@dataclass
class PatchPredictions:
    """Per-tile predictions with their image and patient, enough to score every level."""

    image_ids: np.ndarray  # (N,) str
    patient_ids: np.ndarray  # (N,) str
    pattern_true: np.ndarray  # (N,) int
    pattern_prob: np.ndarray  # (N, K) float
    intensity_true: np.ndarray  # (N,) int
    intensity_prob: np.ndarray  # (N,) float, P(positive)
    seg_counts: np.ndarray  # (N, 5) from segmentation_counts

    @staticmethod
    def concat(parts: list[PatchPredictions]) -> PatchPredictions:
        return PatchPredictions(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("image_ids", "patient_ids", "pattern_true", "pattern_prob", "intensity_true",
           "intensity_prob", "seg_counts")


def _group(pp: PatchPredictions, keys: np.ndarray) -> PatchPredictions:
    """Aggregate rows sharing a key: mean probabilities, summed segmentation counts, first labels."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    n = len(uniq)
    counts = np.bincount(inverse, minlength=n).astype(np.float64)

    def mean_rows(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n,) + values.shape[1:], dtype=np.float64)
        np.add.at(out, inverse, values)
        return out / counts.reshape((n,) + (1,) * (values.ndim - 1))

    seg = np.zeros((n, pp.seg_counts.shape[1]), dtype=np.int64)
    np.add.at(seg, inverse, pp.seg_counts)
    return PatchPredictions(
        image_ids=pp.image_ids[first], patient_ids=pp.patient_ids[first],
        pattern_true=pp.pattern_true[first], pattern_prob=mean_rows(pp.pattern_prob),
        intensity_true=pp.intensity_true[first], intensity_prob=mean_rows(pp.intensity_prob),
        seg_counts=seg,
    )


def _score(pp: PatchPredictions) -> dict[str, float]:
    inter, psum, tsum, correct, size = (pp.seg_counts[:, i].astype(np.float64) for i in range(5))
    denom = psum + tsum
    dice_each = np.where(denom > 0, 2 * inter / np.where(denom > 0, denom, 1), 1.0)
    union = psum + tsum - inter
    iou_each = np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)
    n_classes = pp.pattern_prob.shape[1]
    pattern_pred = pp.pattern_prob.argmax(1)
    intensity_pred = (pp.intensity_prob >= 0.5).astype(int)
    return {
        "n": float(len(pp.pattern_true)),
        "dice": float(dice_each.mean()),
        "iou": float(iou_each.mean()),
        "pixel_accuracy": float((correct / size).mean()),
        "pattern_accuracy": accuracy(pp.pattern_true, pattern_pred),
        "pattern_mca": mean_class_accuracy(pp.pattern_true, pattern_pred, n_classes),
        "intensity_accuracy": accuracy(pp.intensity_true, intensity_pred),
        "intensity_auc": roc_auc(pp.intensity_true, pp.intensity_prob),
    }


def evaluate_levels(pp: PatchPredictions) -> dict[str, dict[str, float]]:
    """Scalar metrics at patch, image and patient level."""
    image = _group(pp, pp.image_ids)
    patient = _group(image, image.patient_ids)
    return {"patch": _score(pp), "image": _score(image), "patient": _score(patient)}


def pattern_confusion(pp: PatchPredictions, level: str = "patch") -> np.ndarray:
    """Pattern confusion matrix at one level."""
    if level not in LEVELS:
        raise ValueError(f"unknown level '{level}'; valid: {', '.join(LEVELS)}")
    if level != "patch":
        pp = _group(pp, pp.image_ids)
        if level == "patient":
            pp = _group(pp, pp.patient_ids)
    return confusion_matrix(pp.pattern_true, pp.pattern_prob.argmax(1), pp.pattern_prob.shape[1])


LevelMetrics = dict[str, dict[str, float]]


def mean_std(per_fold: list[LevelMetrics]) -> tuple[LevelMetrics, LevelMetrics]:
    """Mean and (population) std over folds of each level's scalar metrics."""
    mean: LevelMetrics = {}
    std: LevelMetrics = {}
    for level in LEVELS:
        keys = sorted({k for fold in per_fold for k in fold.get(level, {})})
        mean[level], std[level] = {}, {}
        for key in keys:
            values = np.array([fold[level][key] for fold in per_fold if key in fold.get(level, {})], float)
            mean[level][key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            std[level][key] = float(np.nanstd(values)) if np.isfinite(values).any() else float("nan")
    return mean, std
