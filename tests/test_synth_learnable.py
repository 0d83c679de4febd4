"""The synthetic data is worth learning: simple texture statistics separate the 7 patterns on held-out
patients, well above chance but only in combination, and intensity moves brightness and SNR."""

from __future__ import annotations

import numpy as np
import pytest

from hep2edge.synth.stats import FEATURES, feature_vector
from hep2edge.synth.writer import SynthConfig, patient_labels, render_image

SIZE = (256, 320)
N_CLASSES = 7


def _features(patients: int, seed: int, per: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    config = SynthConfig(out=None, patients=patients, images_per_patient=per, size=SIZE, seed=seed)  # type: ignore[arg-type]
    rows, patterns, intensities = [], [], []
    for index, labels in enumerate(patient_labels(patients, seed)):
        for k in range(1, per + 1):
            image, mask = render_image(config, index + 1, k, labels)
            rows.append(feature_vector(image, mask))
            patterns.append(labels[0])
            intensities.append(labels[1])
    return np.array(rows), np.array(patterns), np.array(intensities)


@pytest.fixture(scope="module")
def split() -> dict[str, np.ndarray]:
    """28 training patients (seed 0) and 14 held-out patients (seed 1, other patients entirely)."""
    x_train, y_train, i_train = _features(28, seed=0)
    x_test, y_test, i_test = _features(14, seed=1)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-9
    return {"x_train": (x_train - mean) / std, "y_train": y_train, "i_train": i_train, "raw_train": x_train,
            "x_test": (x_test - mean) / std, "y_test": y_test, "i_test": i_test}


def _softmax_regression(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 600) -> np.ndarray:
    """Multinomial logistic regression by gradient descent; returns (features + 1, classes) weights."""
    x = np.hstack([x, np.ones((len(x), 1))])
    weights = np.zeros((x.shape[1], classes))
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = x @ weights
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        weights -= 0.5 * (x.T @ (prob - onehot) / len(x) + 1e-3 * weights)
    return weights


def _predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.hstack([x, np.ones((len(x), 1))]) @ weights).argmax(1)


def _nearest_centroid_1d(split: dict[str, np.ndarray], column: int) -> float:
    centroids = np.array([split["x_train"][split["y_train"] == c, column].mean() for c in range(N_CLASSES)])
    pred = np.abs(split["x_test"][:, column, None] - centroids[None]).argmin(1)
    return float((pred == split["y_test"]).mean())


@pytest.mark.slow
def test_patterns_separate_on_held_out_patients(split: dict[str, np.ndarray]) -> None:
    weights = _softmax_regression(split["x_train"], split["y_train"], N_CLASSES)
    accuracy = float((_predict(weights, split["x_test"]) == split["y_test"]).mean())
    assert accuracy >= 0.6, accuracy  # chance is 1/7
    single = {name: _nearest_centroid_1d(split, j) for j, name in enumerate(FEATURES)}
    assert max(single.values()) <= accuracy - 0.15, single  # no single statistic gives it away
    assert single["mean_fg"] < 0.45, single  # brightness alone does not tell the pattern


@pytest.mark.slow
def test_intensity_moves_brightness_and_snr(split: dict[str, np.ndarray]) -> None:
    raw, labels, patterns = split["raw_train"], split["i_train"], split["y_train"]
    col = {name: j for j, name in enumerate(FEATURES)}
    for feature in ("mean_fg", "p99_fg", "snr"):
        positive = raw[labels == 1, col[feature]].mean()
        intermediate = raw[labels == 0, col[feature]].mean()
        assert positive > 1.4 * intermediate, (feature, positive, intermediate)
    # within a pattern, positive patients are brighter than intermediate ones
    brighter = [raw[(patterns == p) & (labels == 1), col["mean_fg"]].mean()
                > raw[(patterns == p) & (labels == 0), col["mean_fg"]].mean()
                for p in range(N_CLASSES) if len(set(labels[patterns == p])) == 2]
    assert brighter and np.mean(brighter) >= 0.75, brighter
    # brightness depends on the pattern too, so intensity needs the texture statistics beside it
    weights = _softmax_regression(split["x_train"], split["i_train"], 2)
    accuracy = float((_predict(weights, split["x_test"]) == split["i_test"]).mean())
    assert accuracy >= 0.7, accuracy
