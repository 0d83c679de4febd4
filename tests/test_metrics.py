"""Task metrics against hand-computed values, and patch -> image -> patient aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hep2edge.metrics import (
    PatchPredictions,
    accuracy,
    confusion_matrix,
    dice,
    evaluate_levels,
    iou,
    mean_class_accuracy,
    mean_std,
    pattern_confusion,
    roc_auc,
    segmentation_counts,
)


def test_dice_and_iou_by_hand() -> None:
    pred = np.array([[1, 1, 0, 0]], bool)
    target = np.array([[1, 0, 1, 0]], bool)
    # intersection 1, |pred| 2, |target| 2, union 3
    assert dice(pred, target) == pytest.approx(0.5)
    assert iou(pred, target) == pytest.approx(1 / 3)
    assert dice(pred, pred) == 1.0 and iou(pred, pred) == 1.0
    empty = np.zeros((2, 2), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, np.ones((2, 2), bool)) == 0.0


def test_confusion_and_accuracies_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 0])
    matrix = confusion_matrix(y_true, y_pred, 4)
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # recalls: class 0 2/3, class 1 1/1, class 2 1/2; class 3 absent and not counted
    assert mean_class_accuracy(y_true, y_pred, 4) == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_roc_auc_by_hand() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # tie counts half
    assert roc_auc(np.array([1, 0, 1]), np.array([0.9, 0.1, 0.8])) == 1.0
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_segmentation_counts() -> None:
    pred = np.array([[[1, 1], [0, 0]]], bool)
    target = np.array([[[1, 0], [1, 0]]], bool)
    assert segmentation_counts(pred, target).tolist() == [[1, 2, 2, 2, 4]]
    # the pad (second column here) counts nowhere: not as foreground, not in pixel accuracy
    valid = np.array([[[1, 0], [1, 0]]], bool)
    assert segmentation_counts(pred, target, valid).tolist() == [[1, 1, 2, 1, 2]]


def _predictions() -> PatchPredictions:
    """Two patients: P1 has images a (2 tiles) and b (1 tile); P2 has image c (1 tile)."""
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    seg = np.array([[1, 2, 2, 3, 4], [0, 0, 0, 4, 4], [2, 2, 2, 4, 4], [0, 1, 1, 2, 4]])
    return PatchPredictions(
        image_ids=np.array(["a", "a", "b", "c"]),
        patient_ids=np.array(["P1", "P1", "P1", "P2"]),
        pattern_true=np.array([0, 0, 0, 1]),
        pattern_prob=prob,
        intensity_true=np.array([1, 1, 1, 0]),
        intensity_prob=np.array([0.7, 0.4, 0.6, 0.2]),
        seg_counts=seg,
    )


def test_levels_by_hand() -> None:
    levels = evaluate_levels(_predictions())
    patch, image, patient = levels["patch"], levels["image"], levels["patient"]
    assert patch["n"] == 4 and image["n"] == 3 and patient["n"] == 2
    # patch: predictions 0, 1, 0, 1 vs 0, 0, 0, 1
    assert patch["pattern_accuracy"] == pytest.approx(0.75)
    assert patch["pattern_mca"] == pytest.approx((2 / 3 + 1) / 2)
    assert patch["intensity_accuracy"] == pytest.approx(0.75)  # 0.4 < 0.5 is wrong
    # patch dice: 2*1/4, both empty -> 1, 2*2/4, 0/2
    assert patch["dice"] == pytest.approx((0.5 + 1.0 + 1.0 + 0.0) / 4)
    # image a: mean prob [0.55, 0.45] -> 0 (right); b -> 0; c -> 1: all right
    assert image["pattern_accuracy"] == 1.0
    # image a segmentation counts summed: inter 1, pred 2, target 2 -> dice 0.5
    assert image["dice"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert image["intensity_accuracy"] == 1.0  # a: mean 0.55
    # patient P1 = mean of images a [0.55, 0.45] and b [0.6, 0.4]
    assert patient["pattern_accuracy"] == 1.0
    assert patient["intensity_auc"] == 1.0
    assert patient["pixel_accuracy"] == pytest.approx(((3 + 4 + 4) / 12 + 2 / 4) / 2)


def test_pattern_confusion_levels() -> None:
    pp = _predictions()
    assert pattern_confusion(pp, "patch").tolist() == [[2, 1], [0, 1]]
    assert pattern_confusion(pp, "image").tolist() == [[2, 0], [0, 1]]
    assert pattern_confusion(pp, "patient").tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError):
        pattern_confusion(pp, "slide")


def test_concat_and_mean_std() -> None:
    pp = _predictions()
    both = PatchPredictions.concat([pp, pp])
    assert len(both.image_ids) == 8
    folds = [{"patch": {"dice": 0.8}}, {"patch": {"dice": 0.6}}]
    mean, std = mean_std(folds)
    assert mean["patch"]["dice"] == pytest.approx(0.7)
    assert std["patch"]["dice"] == pytest.approx(0.1)
