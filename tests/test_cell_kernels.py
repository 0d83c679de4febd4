"""The compiled cell kernels (numba) against the reference (numpy + OpenCV), and how kernels are chosen.

The shared behaviour tests run over both kernel sets in test_instances.py; here: fields of many touching cells
where the two floods may differ by a border pixel, records that must be equal, row bands, and the registry.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from hep2edge import row_bands
from hep2edge.cell_kernels import CELL_KERNELS, cell_kernels, kernel_choices
from hep2edge.errors import MissingExtraError, RegistryError
from hep2edge.instances import InstanceParams, distance_target
from hep2edge.labels import PATTERNS
from hep2edge.runtime.settings import CELL_KERNELS as SETTING_CHOICES

NUMPY, NUMBA = cell_kernels("numpy"), cell_kernels("numba")


def crowded_field(shape: tuple[int, int], seed: int) -> np.ndarray:
    """(H, W) int32: ~40 px ellipses on a jittered grid, many touching (later ones drawn on top)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    cell = 0
    for y in range(25, shape[0] - 10, 42):
        for x in range(25, shape[1] - 10, 42):
            cell += 1
            centre = (x + int(rng.integers(-6, 7)), y + int(rng.integers(-6, 7)))
            axes = (int(rng.integers(17, 26)), int(rng.integers(17, 26)))
            cv2.ellipse(labels, centre, axes, float(rng.uniform(0, 180)), 0, 360, cell, -1)
    return labels


def field_maps(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A crowded field's truth, its uint8 distance map, a uint8 gray image and a uint8 (8, H, W) pattern map."""
    truth = crowded_field(shape, seed)
    rng = np.random.default_rng(seed + 1)
    distance = np.round(distance_target(truth) * 255).astype(np.uint8)
    gray = rng.integers(0, 256, shape, dtype=np.uint8)
    probs = rng.integers(0, 256, (len(PATTERNS) + 1, *shape), dtype=np.uint8)
    return truth, distance, gray, probs


def best_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """The smallest over true cells of the IoU with the predicted cell covering most of it."""
    worst = 1.0
    for cell in range(1, int(truth.max()) + 1):
        own = truth == cell
        if own.any():
            ids, counts = np.unique(pred[own], return_counts=True)
            match = pred == ids[counts.argmax()]
            worst = min(worst, float((own & match).sum() / (own | match).sum()))
    return worst


@pytest.mark.parametrize(("shape", "scale"), [((256, 384), 2), ((257, 383), 2), ((250, 301), 3), ((160, 200), 1)])
def test_the_twin_finds_the_reference_cells_up_to_border_pixels(shape: tuple[int, int], scale: int) -> None:
    truth, distance, gray, probs = field_maps(shape, seed=sum(shape))
    params = replace(InstanceParams(), scale=scale, min_area=100)
    reference = NUMPY.instances(truth > 0, distance, params)
    labels, records = NUMBA.cells(truth > 0, distance, gray, probs, params)
    assert labels.max() == reference.max() == len(records) and labels.max() > 10
    mask = truth > 0
    assert ((labels > 0) == (reference > 0)).all()  # both cut to the mask, every pixel of a cell's cluster
    # the floods part contested pixels differently (first come vs watershed lines given to the larger id)
    assert np.mean(labels[mask] == reference[mask]) > 0.97 and best_iou(reference, labels) > 0.85
    assert best_iou(truth, labels) > best_iou(truth, reference) - 0.05
    assert (NUMBA.instances(truth > 0, distance, params) == labels).all()
    assert records == NUMPY.records(labels, gray, probs)  # the fused pass measures what the reference would


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_records_of_the_same_labels_are_the_reference_records(dtype: type) -> None:
    truth, _, gray, probs = field_maps((200, 260), seed=5)
    truth[truth % 7 == 0] = 0  # holes in the id range
    truth[50:60, 40:200] = 0  # and cells cut in two pieces
    image = (gray.astype(np.float64) * 257.3).astype(dtype)
    assert NUMBA.records(truth, image, probs) == NUMPY.records(truth, image, probs)
    assert NUMBA.records(truth, image) == NUMPY.records(truth, image)


def test_row_bands_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    truth, distance, gray, probs = field_maps((300, 256), seed=9)
    results = []
    for threads in (1, 3, 4):
        monkeypatch.setattr(row_bands, "thread_count", lambda threads=threads: threads)
        assert len(row_bands.row_bands(300)) == min(threads, 300 // row_bands.MIN_BAND_ROWS)
        results.append(NUMBA.cells(truth > 0, distance, gray, probs, InstanceParams()))
    assert all((labels == results[0][0]).all() and records == results[0][1] for labels, records in results)
    image = np.random.default_rng(1).integers(0, 256, (300, 80), dtype=np.uint8)
    kernel = cv2.getGaussianKernel(9, 2.0)
    whole = cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    banded = row_bands.filter_in_bands(image, 4, lambda part: cv2.sepFilter2D(
        part, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101))
    assert (banded == whole).all()


def test_a_float_pattern_map_is_measured_by_the_reference() -> None:
    truth, distance, gray, probs = field_maps((128, 160), seed=3)
    floats = probs.astype(np.float32) / 255
    labels, records = NUMBA.cells(truth > 0, distance, gray, floats, InstanceParams(min_area=100))
    assert records == NUMPY.records(labels, gray, floats) and "pattern" in records[0]


def test_kernels_are_chosen_by_name() -> None:
    assert kernel_choices() == SETTING_CHOICES  # the runtime setting lists what the registry holds
    assert cell_kernels("auto").name == "numba" and cell_kernels(" NumPy ").name == "numpy"
    with pytest.raises(RegistryError, match="valid names: numba, numpy"):
        cell_kernels("cuda")
    assert sorted(CELL_KERNELS.names()) == ["numba", "numpy"]


def test_without_numba_auto_takes_the_reference_and_numba_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # what an install without the `fast` extra sees
    monkeypatch.delitem(sys.modules, "hep2edge.instances_numba")
    with pytest.raises(MissingExtraError, match=r"pip install 'hep2edge\[fast\]'"):
        cell_kernels("numba")
    assert cell_kernels("auto").name == "numpy"
