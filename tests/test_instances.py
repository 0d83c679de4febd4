"""Instance post-processing (hep2edge.instances): distance targets, watershed instances, per-cell records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from hep2edge.cell_kernels import CELL_KERNELS, CellKernels, cell_kernels
from hep2edge.cell_records import pattern_cell_counts
from hep2edge.errors import ContractError
from hep2edge.instances import InstanceParams, connected_instances, distance_target
from hep2edge.labels import PATTERNS


@pytest.fixture(params=CELL_KERNELS.names())
def kernels(request: pytest.FixtureRequest) -> CellKernels:
    """Every test that takes it runs on the reference (numpy) and on the compiled twin (numba)."""
    return cell_kernels(request.param)


# the hand-made cells here are small (9 x 9 px squares, r = 10 disks): full size, no smoothing
SMALL = InstanceParams(min_area=30, smooth=0, scale=1)

def touching_disks(count: int = 5, radius: int = 10, step: int = 19) -> np.ndarray:
    """A row of `count` disks, each overlapping the next by a few pixels (later ones drawn on top)."""
    labels = np.zeros((2 * radius + 10, step * count + 2 * radius + 10), np.int32)
    for i in range(count):
        cv2.circle(labels, (radius + 5 + i * step, radius + 5), radius, i + 1, -1)
    return labels


def best_iou(truth: np.ndarray, pred: np.ndarray, cell: int) -> float:
    own = truth == cell
    ids, counts = np.unique(pred[own], return_counts=True)
    match = pred == ids[counts.argmax()]
    return float((own & match).sum() / (own | match).sum())


# --- distance_target ---------------------------------------------------------------------------------------------
def test_distance_target_separates_two_touching_squares() -> None:
    labels = np.zeros((12, 24), np.int32)
    labels[2:10, 2:12] = 1
    labels[2:10, 12:22] = 2
    d = distance_target(labels)
    assert d.dtype == np.float32 and d.shape == labels.shape
    assert (d[labels == 0] == 0).all()
    assert d[labels == 1].max() == pytest.approx(1.0) and d[labels == 2].max() == pytest.approx(1.0)
    # 8 rows: the deepest pixel is 4 px from outside its cell, so every edge pixel, the shared border too, is 1/4
    assert d[5, 11] == pytest.approx(0.25) and d[5, 12] == pytest.approx(0.25)
    assert d[5, 10] > d[5, 11] and d[5, 13] > d[5, 12]
    merged = distance_target((labels > 0).astype(np.int32))
    assert merged[5, 11] > 0.5  # one cell: no valley where the two squares met


def test_distance_target_keeps_cells_cut_by_the_image_edge_open() -> None:
    labels = np.zeros((10, 10), np.int32)
    labels[:, :5] = 1
    d = distance_target(labels)
    assert d[5, 0] == pytest.approx(1.0)  # outside the image is not background: the peak sits at the cut
    assert (distance_target(np.ones((4, 4), np.int32)) == 1).all()  # a cell filling the tile


# --- instances ---------------------------------------------------------------------------------------------------
def test_watershed_recovers_touching_disks_that_components_merge(kernels: CellKernels) -> None:
    truth = touching_disks()
    d = distance_target(truth)
    labels = kernels.instances(truth > 0, d, SMALL)
    assert labels.dtype == np.int32 and labels.max() == 5
    assert sorted(np.unique(labels).tolist()) == list(range(6))
    assert min(best_iou(truth, labels, cell) for cell in range(1, 6)) > 0.95
    assert ((labels > 0) == (truth > 0)).all()
    assert connected_instances(truth > 0, 30).max() == 1


def test_a_confluent_sheet_of_more_than_255_cells_is_split(kernels: CellKernels) -> None:
    truth = np.zeros((16 * 9 + 4, 20 * 9 + 4), np.int32)
    for i in range(16):
        for j in range(20):
            truth[2 + i * 9:11 + i * 9, 2 + j * 9:11 + j * 9] = i * 20 + j + 1
    labels = kernels.instances(truth > 0, distance_target(truth), SMALL)
    assert labels.max() == 320 and ((labels > 0) == (truth > 0)).all()
    assert len(set(zip(truth[truth > 0].tolist(), labels[truth > 0].tolist()))) == 320  # one instance per square


def test_uint8_and_float_distance_give_the_same_labels(kernels: CellKernels) -> None:
    truth = touching_disks(4)
    d = distance_target(truth)
    as_float = kernels.instances(truth > 0, d, SMALL)
    as_uint8 = kernels.instances(truth > 0, np.round(d * 255).astype(np.uint8), SMALL)
    assert as_float.max() == 4
    assert (as_float == as_uint8).all()


def test_min_area_removes_a_speck(kernels: CellKernels) -> None:
    truth = touching_disks(2)
    truth[1:4, -4:-1] = 9  # a 3 x 3 speck, away from the disks
    d = distance_target(truth)
    assert kernels.instances(truth > 0, d, SMALL).max() == 2
    kept = kernels.instances(truth > 0, d, replace(SMALL, min_area=0))
    speck = kept[1:4, -4:-1]
    assert kept.max() == 3 and (speck == speck[0, 0]).all() and speck[0, 0] not in kept[truth != 9]
    assert connected_instances(truth > 0, 30).max() == 1
    assert connected_instances(truth > 0, 0).max() == 2


def test_h_merges_shallow_peaks_and_splits_deep_ones(kernels: CellKernels) -> None:
    """Two cones 10 px apart in one blob: the saddle is 0.25 below both peaks."""
    yy, xx = np.mgrid[0:21, 0:41].astype(np.float32)
    cones = [1 - np.hypot(yy - 10, xx - cx) / 20 for cx in (15, 25)]
    d = np.clip(np.maximum(*cones), 0, 1)
    mask = np.ones(d.shape, bool)
    assert kernels.instances(mask, d, replace(SMALL, h=0.1)).max() == 2
    assert kernels.instances(mask, d, replace(SMALL, h=0.3)).max() == 1


def test_h_splits_a_marker_next_to_another_one_in_the_same_cluster(kernels: CellKernels) -> None:
    yy, xx = np.mgrid[0:21, 0:81].astype(np.float32)
    d = np.clip(np.max([1 - np.hypot(yy - 10, xx - cx) / 20 for cx in (15, 25, 60)], axis=0), 0, 1)
    mask = np.ones(d.shape, bool)
    labels = kernels.instances(mask, d, replace(SMALL, h=0.1))
    assert labels.max() == 3 and len({labels[10, 15], labels[10, 25], labels[10, 60]}) == 3
    assert kernels.instances(mask, d, replace(SMALL, h=0.3)).max() == 2


def test_shrunk_maps_find_the_same_full_size_cells(kernels: CellKernels) -> None:
    """scale 2 works on a quarter of the pixels; the cells come back at full size, inside the full mask."""
    truth = touching_disks(4, radius=30, step=56)
    d = distance_target(truth)
    full = kernels.instances(truth > 0, d, SMALL)
    half = kernels.instances(truth > 0, d, replace(SMALL, scale=2))
    assert full.max() == half.max() == 4 and half.shape == truth.shape
    assert ((half > 0) == (truth > 0)).all()
    assert min(best_iou(truth, half, cell) for cell in range(1, 5)) > 0.95


def test_smoothing_merges_the_noise_peaks_of_one_cell(kernels: CellKernels) -> None:
    """A disk whose distance map carries a ripple: raw, the ripple's crests split it; smoothed, it is one cell."""
    truth = np.zeros((70, 70), np.int32)
    cv2.circle(truth, (35, 35), 30, 1, -1)
    xx = np.mgrid[0:70, 0:70][1].astype(np.float32)
    d = distance_target(truth) * (0.75 + 0.25 * np.cos(xx * 2 * np.pi / 8)).astype(np.float32)
    params = replace(SMALL, marker_threshold=0.5, h=0)
    assert kernels.instances(truth > 0, d, params).max() > 1
    assert kernels.instances(truth > 0, d, replace(params, smooth=4)).max() == 1


def test_a_cell_inside_the_hole_of_another_stays_apart(kernels: CellKernels) -> None:
    truth = np.zeros((60, 60), np.int32)
    cv2.circle(truth, (30, 30), 24, 1, -1)
    cv2.circle(truth, (30, 30), 12, 0, -1)
    cv2.circle(truth, (30, 30), 6, 2, -1)
    labels = kernels.instances(truth > 0, distance_target(truth), SMALL)
    assert labels.max() == 2 and len(np.unique(labels[truth == 1])) == 1 and len(np.unique(labels[truth == 2])) == 1
    assert labels[30, 30] != labels[30, 8]
    assert connected_instances(truth > 0, 30).max() == 2


def test_a_cluster_without_a_marker_is_dropped_and_an_empty_mask_gives_nothing(kernels: CellKernels) -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    flat = np.full(mask.shape, 0.3, np.float32)
    assert kernels.instances(mask, flat, SMALL).max() == 0
    empty = kernels.instances(np.zeros((8, 9), bool), np.zeros((8, 9), np.float32), InstanceParams())
    assert empty.shape == (8, 9) and empty.dtype == np.int32 and not empty.any()
    assert not connected_instances(np.zeros((8, 9), np.uint8), 0).any()
    assert kernels.records(empty, np.zeros((8, 9), np.uint8)) == []
    assert pattern_cell_counts([]) == dict.fromkeys(PATTERNS, 0)


def test_maps_of_the_wrong_kind_are_refused(kernels: CellKernels) -> None:
    with pytest.raises(ValueError, match="mask"):
        kernels.instances(np.ones((4, 4), bool), np.ones((4, 5), np.float32), InstanceParams())
    with pytest.raises(ValueError, match="distance map"):
        kernels.instances(np.ones((4, 4), bool), np.ones((4, 4), np.uint16), InstanceParams())


# --- cell records ------------------------------------------------------------------------------------------------
def hand_made() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4] = 3  # 6 px
    labels[3:6, 6] = 7  # 3 px
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    probs = np.zeros((8, 6, 8), np.float32)
    probs[0] = 0.9  # background: never a cell's pattern
    probs[2, 1:3, 1:4] = 0.1
    probs[2, 1, 1:3] = probs[2, 2, 1:3] = 0.7  # 4 px vote speckled ...
    probs[5, 1:3, 3] = 0.8  # ... 2 px vote centromere
    probs[1, 3:6, 6] = probs[3, 3:6, 6] = 0.4  # a tie on every pixel: the earlier pattern wins
    return labels, gray, probs


def test_cell_records_worked_out_by_hand(kernels: CellKernels) -> None:
    labels, gray, probs = hand_made()
    first, second = kernels.records(labels, gray, probs)
    assert first == {"id": 3, "centroid": [1.5, 2.0], "area": 6, "bbox": [1, 1, 3, 4], "mean_intensity": 14.0,
                     "pattern": "speckled", "pattern_probability": 0.5}
    assert second == {"id": 7, "centroid": [4.0, 6.0], "area": 3, "bbox": [3, 6, 6, 7], "mean_intensity": 38.0,
                      "pattern": "homogeneous", "pattern_probability": 0.4}
    assert "pattern" not in kernels.records(labels, gray)[0]
    counts = pattern_cell_counts([first, second])
    assert counts == {**dict.fromkeys(PATTERNS, 0), "speckled": 1, "homogeneous": 1}


def test_a_uint8_pattern_map_reads_as_probabilities(kernels: CellKernels) -> None:
    labels, gray, probs = hand_made()
    records = kernels.records(labels, gray, np.round(probs * 255).astype(np.uint8))
    assert [r["pattern"] for r in records] == ["speckled", "homogeneous"]
    assert records[0]["pattern_probability"] == pytest.approx(0.5, abs=1 / 255)


@pytest.mark.parametrize("cells", [12, 9000])  # up to 8,191 cells one uint16 histogram, beyond it numpy's
def test_one_pixel_cells_take_their_own_pixels_pattern_and_probability(cells: int, kernels: CellKernels) -> None:
    labels = np.arange(1, cells + 1, dtype=np.int32).reshape(-1, 12 if cells == 12 else 100)
    probs = np.random.default_rng(cells).integers(0, 256, (len(PATTERNS) + 1, *labels.shape), dtype=np.uint8)
    records = kernels.records(labels, np.zeros(labels.shape, np.uint8), probs)
    flat = probs[1:].reshape(len(PATTERNS), -1)
    assert [r["pattern"] for r in records] == [PATTERNS[i] for i in flat.argmax(axis=0)]
    assert [r["pattern_probability"] for r in records] == [round(v / 255, 4) for v in flat.max(axis=0).tolist()]


@pytest.mark.parametrize("cell", [1, 5])  # ids 1..n as they are, and renumbered through a lookup
def test_negative_labels_are_background_for_the_pattern_votes_too(cell: int, kernels: CellKernels) -> None:
    labels = np.zeros((4, 8), np.int32)
    labels[:, :3], labels[:, 4:] = cell, -1  # the negative region is the larger
    probs = np.zeros((len(PATTERNS) + 1, 4, 8), np.uint8)
    probs[1 + 2, :, :3] = 200  # the cell votes pattern 2
    probs[1 + 6, :, 4:] = 255  # the negative region would vote pattern 6
    (record,) = kernels.records(labels, np.zeros(labels.shape, np.uint8), probs)
    assert record["id"] == cell and record["pattern"] == PATTERNS[2]
    assert record["pattern_probability"] == round(200 / 255, 4)


def test_cell_records_do_not_depend_on_the_label_numbers(kernels: CellKernels) -> None:
    truth = touching_disks(6)
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 255, truth.shape).astype(np.uint8)
    probs = rng.random((8, *truth.shape)).astype(np.float32)
    new_ids = np.concatenate([[0], rng.permutation(np.arange(100, 100_000))[:6]]).astype(np.int32)
    before = kernels.records(truth, gray, probs)
    after = kernels.records(new_ids[truth], gray, probs)
    assert pattern_cell_counts(before) == pattern_cell_counts(after)
    by_place = [{k: v for k, v in r.items() if k != "id"} for r in before]
    assert sorted(by_place, key=str) == sorted(({k: v for k, v in r.items() if k != "id"} for r in after), key=str)
    assert [r["id"] for r in after] == sorted(new_ids[1:].tolist())


def test_a_label_in_two_pieces_is_one_record(kernels: CellKernels) -> None:
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 4
    labels[7:9, 6:9] = 4
    (record,) = kernels.records(labels, np.ones((10, 10), np.uint8))
    assert record["area"] == 10 and record["bbox"] == [1, 1, 9, 9]


# --- params ------------------------------------------------------------------------------------------------------
def test_params_round_trip_and_defaults() -> None:
    params = InstanceParams(marker_threshold=0.4, h=0.05, min_area=12)
    assert InstanceParams.from_dict(params.to_dict()) == params
    assert InstanceParams.from_dict({}) == InstanceParams()


@pytest.mark.parametrize(("data", "field"), [
    ({"marker_threshold": 1.5}, "marker_threshold"),
    ({"marker_threshold": True}, "marker_threshold"),
    ({"h": -0.1}, "h"),
    ({"h": "0.1"}, "h"),
    ({"h": float("nan")}, "h"),
    ({"min_area": -1}, "min_area"),
    ({"min_area": 2.5}, "min_area"),
    ({"scale": 0}, "scale"),
    ({"scale": 1.5}, "scale"),
    ({"smooth": -1}, "smooth"),
    ({"smooth": 80}, "smooth"),
    ({"bogus": 1}, "bogus"),
])
def test_params_refuse_bad_values_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ContractError, match=field):
        InstanceParams.from_dict(data)


# --- benchmark script --------------------------------------------------------------------------------------------
def test_bench_instances_writes_its_result_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_instances

    code = bench_instances.main(["--quick", "--out", str(tmp_path), "--size", "96x128", "--cells", "6",
                                 "--repeats", "2", "--tile", "64"])
    assert code == 0
    (written,) = tmp_path.glob("*-instances-host-*.json")
    data = json.loads(written.read_text())
    assert set(data["timings_ms"]) >= {"instances_from_maps", "cell_records_pattern", "post_processing_numpy",
                                       "post_processing_numba"} and data["budget_row"] == "post_processing_numba"
    assert data["found"]["instances_from_maps"] == data["true_cells"] == data["found"]["numba"]
    assert data["verdict"] == "not measured" and 0.9 < data["agreement"] <= 1
    assert written.with_suffix(".md").is_file()
