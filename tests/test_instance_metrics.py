"""Per-cell metrics (issue 12) against hand-worked label images, with every warning raised as an error."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from hep2edge import metrics
from hep2edge.instance_metrics import (
    aji,
    centroids,
    count_error,
    instance_scores,
    match_centroids,
    match_instances,
    mean_instance_scores,
    mean_iou,
    panoptic_quality,
)


@pytest.fixture(autouse=True)
def _warnings_are_errors() -> Iterator[None]:
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        yield


def _scene(dtype: npt.DTypeLike = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """6x6: truth 1 = rows 0-1 x cols 0-3 (8 px), truth 2 = rows 3-5 x cols 3-5 (9 px);
    pred 7 = rows 0-1 x cols 0-1 (4 px), pred 9 = rows 3-5 x cols 2-5 (12 px), pred 4 = pixel (5, 0)."""
    truth = np.zeros((6, 6), dtype)
    truth[0:2, 0:4] = 1
    truth[3:6, 3:6] = 2
    pred = np.zeros((6, 6), dtype)
    pred[0:2, 0:2] = 7
    pred[3:6, 2:6] = 9
    pred[5, 0] = 4
    return truth, pred


def _relabel(labels: np.ndarray, mapping: dict[int, int], dtype: npt.DTypeLike) -> np.ndarray:
    out = np.zeros(labels.shape, dtype)
    for old, new in mapping.items():
        out[labels == old] = new
    return out


def test_scene_by_hand() -> None:
    truth, pred = _scene()
    # IoU(1, 7) = 4 / 8 = 0.5; IoU(2, 9) = 9 / 12 = 0.75; pred 4 overlaps nothing.
    # AJI: C = 4 + 9 = 13; U = 8 + 12 + 1 (unused pred 4) = 21
    assert aji(truth, pred) == pytest.approx(13 / 21)
    # PQ needs IoU > 0.5: only (2, 9). TP 1, FN 1, FP 2 -> DQ = 1 / (1 + 0.5 + 1) = 0.4, SQ = 0.75, PQ = 0.3
    assert panoptic_quality(truth, pred) == pytest.approx({"pq": 0.3, "dq": 0.4, "sq": 0.75})
    # matching needs IoU >= 0.5: (1, 7) and (2, 9). TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 = 4 / (4 + 1) = 0.8
    assert match_instances(truth, pred) == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "tp": 2, "fp": 1, "fn": 0})
    # n_true 2, n_pred 3 -> |3 - 2| = 1, 1 / 2
    assert count_error(truth, pred) == {"absolute": 1, "relative": 0.5}


def test_centroids_by_hand() -> None:
    truth, pred = _scene()
    ids, points = centroids(pred)
    # pred 4 = (5, 0); pred 7 = mean of rows 0,1 and cols 0,1 = (0.5, 0.5); pred 9 = (4, mean 2..5 = 3.5)
    assert ids.tolist() == [4, 7, 9]
    assert points == pytest.approx(np.array([[5.0, 0.0], [0.5, 0.5], [4.0, 3.5]]))
    # truth 1 = (0.5, 1.5), truth 2 = (4, 4): distances to preds 7 and 9 are 1.0 and 0.5 -> both within 1.0
    scores = instance_scores(truth, pred, radius=1.0)
    assert scores == pytest.approx({
        "aji": 13 / 21, "pq": 0.3, "dq": 0.4, "sq": 0.75, "precision": 2 / 3, "recall": 1.0, "f1": 0.8,
        "centroid_f1": 0.8, "count_absolute_error": 1, "count_relative_error": 0.5,
    })
    # radius 0.9 loses (1, 7): TP 1, FP 2, FN 1 -> F1 = 2 / (2 + 2 + 1) = 0.4
    assert instance_scores(truth, pred, radius=0.9)["centroid_f1"] == pytest.approx(0.4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
def test_integer_dtypes_agree(dtype: npt.DTypeLike) -> None:
    truth, pred = _scene(dtype)
    reference = instance_scores(*_scene(), radius=1.0)
    assert instance_scores(truth, pred, radius=1.0) == pytest.approx(reference)


@pytest.mark.parametrize(("dtype", "ids"), [
    (np.uint16, {1: 65535, 2: 3, 7: 2, 9: 65534, 4: 1}),
    (np.int64, {1: 2**40, 2: 5, 7: 2**33 + 1, 9: 17, 4: 2**62}),  # beyond the lookup table: np.unique path
])
def test_relabelling_changes_nothing(dtype: npt.DTypeLike, ids: dict[int, int]) -> None:
    truth, pred = _scene()
    reference = instance_scores(truth, pred, radius=1.0)
    truth2 = _relabel(truth, {1: ids[1], 2: ids[2]}, dtype)
    pred2 = _relabel(pred, {7: ids[7], 9: ids[9], 4: ids[4]}, dtype)
    assert instance_scores(truth2, pred2, radius=1.0) == pytest.approx(reference)
    # swapping the roles of ids within one image (a permutation) changes nothing either
    assert instance_scores(_relabel(truth, {1: 2, 2: 1}, dtype), pred, radius=1.0) == pytest.approx(reference)
    assert centroids(pred2)[0].tolist() == sorted([ids[7], ids[9], ids[4]])


def _strip() -> tuple[np.ndarray, np.ndarray]:
    """2x10 strip: truth A = cols 0-4, B = cols 5-9; pred Y = cols 0-1, X = cols 2-6."""
    truth = np.zeros((2, 10), np.int32)
    truth[:, 0:5], truth[:, 5:10] = 1, 2
    pred = np.zeros((2, 10), np.int32)
    pred[:, 0:2], pred[:, 2:7] = 1, 2
    return truth, pred


def test_hungarian_beats_greedy() -> None:
    truth, pred = _strip()
    # IoU(A, X) = 6 / 14 = 0.4286 (the best single pair), IoU(A, Y) = 4 / 10 = 0.4, IoU(B, X) = 4 / 16 = 0.25,
    # IoU(B, Y) = 0. Greedy takes (A, X) first and leaves B nothing: 1 TP. Optimal: (A, Y) + (B, X) = 2 TP.
    assert match_instances(truth, pred, iou=0.2) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 2, "fp": 0, "fn": 0})
    # PQ below 0.5 uses the same one-to-one matching: DQ 1, SQ = (0.4 + 0.25) / 2 = 0.325
    assert panoptic_quality(truth, pred, iou=0.2) == pytest.approx({"pq": 0.325, "dq": 1.0, "sq": 0.325})
    # at 0.5 nothing qualifies: TP 0, FP 2, FN 2
    assert match_instances(truth, pred)["tp"] == 0
    assert panoptic_quality(truth, pred) == {"pq": 0.0, "dq": 0.0, "sq": 0.0}
    # AJI: A -> X (0.4286): C 6, U 14; B -> X (0.25): C 4, U 16; Y unused: U += 4 -> 10 / 34
    assert aji(truth, pred) == pytest.approx(10 / 34)


def test_centroid_hungarian_and_radius_boundary() -> None:
    # on a line: t1 = 0, t2 = 3.5; p1 = 2, p2 = 6. Greedy takes the closest pair (t2, p1) = 1.5 and
    # strands t1 (p2 is 6 away): 1 TP. Optimal: (t1, p1) = 2 and (t2, p2) = 2.5, both within 2.5: 2 TP.
    truth = np.array([[0.0, 0.0], [0.0, 3.5]])
    pred = np.array([[0.0, 2.0], [0.0, 6.0]])
    assert match_centroids(truth, pred, radius=2.5)["tp"] == 2
    assert match_centroids(truth, pred, radius=2.49)["tp"] == 1
    # a 3-4-5 triangle: distance exactly 5 counts at radius 5, not at 4.99
    assert match_centroids([[0, 0]], [[3, 4]], radius=5.0) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "fp": 0, "fn": 0})
    assert match_centroids([[0, 0]], [[3, 4]], radius=4.99) == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 1})
    assert match_centroids([[1, 1]], [[1, 1]], radius=0.0)["tp"] == 1


def test_empty_images_have_defined_values() -> None:
    empty = np.zeros((6, 6), np.uint16)
    truth, _ = _scene(np.uint16)
    # both empty: perfect
    assert aji(empty, empty) == 1.0
    assert panoptic_quality(empty, empty) == {"pq": 1.0, "dq": 1.0, "sq": 1.0}
    assert match_instances(empty, empty) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 0, "fp": 0, "fn": 0}
    assert count_error(empty, empty) == {"absolute": 0, "relative": 0.0}
    assert instance_scores(empty, empty)["centroid_f1"] == 1.0
    # empty prediction: nothing found (recall 0), nothing claimed wrongly (precision 1.0)
    assert aji(truth, empty) == 0.0
    assert panoptic_quality(truth, empty) == {"pq": 0.0, "dq": 0.0, "sq": 0.0}
    assert match_instances(truth, empty) == {"precision": 1.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2}
    assert count_error(truth, empty) == {"absolute": 2, "relative": 1.0}
    # empty truth: everything claimed is wrong (precision 0), nothing to miss (recall 1.0); relative = 2 / max(0, 1)
    assert aji(empty, truth) == 0.0
    assert panoptic_quality(empty, truth) == {"pq": 0.0, "dq": 0.0, "sq": 0.0}
    assert match_instances(empty, truth) == {"precision": 0.0, "recall": 1.0, "f1": 0.0, "tp": 0, "fp": 2, "fn": 0}
    assert count_error(empty, truth) == {"absolute": 2, "relative": 2.0}
    scores = instance_scores(empty, truth)
    assert all(np.isfinite(v) for v in scores.values())
    ids, points = centroids(empty)
    assert ids.shape == (0,) and points.shape == (0, 2)
    assert match_centroids([], np.zeros((0, 2)), radius=3.0)["f1"] == 1.0


def test_mean_iou_by_hand() -> None:
    classes = ["background", "homogeneous", "speckled", "mitotic"]
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]], np.uint8)
    pred = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 0, 0, 0], [2, 2, 0, 0]], np.uint8)
    # background: 8 true, 8 pred, 7 shared -> 7 / 9; homogeneous: 4, 5, 4 -> 4 / 5; speckled: 4, 3, 3 -> 3 / 4
    # mitotic is in neither map: None, and left out of the mean
    result = mean_iou(truth, pred, classes)
    assert result["per_class"] == pytest.approx({"background": 7 / 9, "homogeneous": 0.8, "speckled": 0.75,
                                                 "mitotic": None})
    assert result["miou"] == pytest.approx((7 / 9 + 0.8 + 0.75) / 3)
    # class i is always label value i: listed without "background", value 0 is scored as "a"
    assert mean_iou(truth, pred, ["a", "b"])["per_class"] == pytest.approx({"a": 7 / 9, "b": 0.8})
    # values outside the list belong to no class; no listed class anywhere -> miou 1.0
    other = np.full((4, 4), 9, np.uint16)
    assert mean_iou(other, other, ["background"]) == {"per_class": {"background": None}, "miou": 1.0}
    assert mean_iou(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32), classes)["miou"] == 1.0


def test_mean_instance_scores() -> None:
    a = {"aji": 0.5, "f1": 1.0, "count_absolute_error": 2}
    b = {"aji": 1.0, "f1": 0.0, "count_absolute_error": 1}
    assert mean_instance_scores([a, b]) == pytest.approx({"aji": 0.75, "f1": 0.5, "count_absolute_error": 1.5})
    assert mean_instance_scores([]) == {}
    truth, pred = _scene()
    one = instance_scores(truth, pred)
    assert mean_instance_scores([one, one]) == pytest.approx(one)


def test_invalid_inputs_are_refused() -> None:
    labels = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="dtype float64"):
        aji(labels.astype(np.float64), labels)
    with pytest.raises(ValueError, match="dtype float32"):
        mean_iou(labels, labels.astype(np.float32), ["background"])
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        panoptic_quality(labels, np.zeros((4, 5), np.int32))
    for fn in (aji, panoptic_quality, match_instances, count_error, instance_scores):
        with pytest.raises(ValueError, match="shape"):
            fn(labels, np.zeros((5, 4), np.int32))
    with pytest.raises(ValueError, match="negative"):
        count_error(labels - 1, labels)
    with pytest.raises(ValueError, match="iou"):
        match_instances(labels, labels, iou=1.5)
    with pytest.raises(ValueError, match="radius"):
        match_centroids([[0, 0]], [[0, 0]], radius=-1.0)
    with pytest.raises(ValueError, match="N, 2"):
        match_centroids(np.zeros((3, 3)), np.zeros((1, 2)), radius=1.0)
    with pytest.raises(ValueError, match="2-D"):
        centroids(np.zeros((2, 2, 2), np.int32))
    with pytest.raises(ValueError, match="unique"):
        mean_iou(labels, labels, ["a", "a"])


def test_reexported_from_metrics() -> None:
    assert metrics.aji is aji and metrics.instance_scores is instance_scores and metrics.mean_iou is mean_iou


def test_full_field_runs() -> None:
    """A 1040x1388 field with ~200 disks and non-consecutive uint16 ids scores perfectly against itself."""
    rng = np.random.default_rng(12)
    field = np.zeros((1040, 1388), np.uint16)
    yy, xx = np.ogrid[:1040, :1388]
    for cell_id in rng.choice(np.arange(1, 65536), size=200, replace=False):
        cy, cx, r = rng.integers(0, 1040), rng.integers(0, 1388), rng.integers(10, 30)
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, 1040), max(cx - r, 0), min(cx + r + 1, 1388)
        disk = (yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 <= r * r
        field[y0:y1, x0:x1][disk] = cell_id
    assert len(centroids(field)[0]) > 150  # a few disks are painted over
    assert aji(field, field) == 1.0
    scores = instance_scores(field, field)
    assert scores["pq"] == pytest.approx(1.0) and scores["f1"] == 1.0 and scores["centroid_f1"] == 1.0
