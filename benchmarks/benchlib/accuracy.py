"""Task metrics of one backend on a held-out tile set: the same functions export verification uses."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .choice import Choice, open_backend

METRICS = ("dice", "iou", "pattern_accuracy", "pattern_mca", "intensity_accuracy", "intensity_auc")
LEVELS = ("patch", "image", "patient")


def backend_outputs(choice: Choice, images: np.ndarray, batch: int) -> tuple[dict[str, np.ndarray], float, str]:
    """All outputs of `choice` on `images` in batches, the ms per tile, and the backend's description."""
    parts: dict[str, list[np.ndarray]] = {"mask": [], "pattern": [], "intensity": []}
    with open_backend(choice, batch) as backend:
        backend.infer(images[: min(batch, len(images))])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            out = backend.infer(images[start : start + batch])
            for name in parts:
                parts[name].append(out[name])
        per_tile = (time.perf_counter() - started) * 1000 / len(images)
        described = backend.describe()
    return {name: np.concatenate(values) for name, values in parts.items()}, per_tile, described


def field_backend_outputs(choice: Choice, tiles: Any, contract: Any, pooling: str = "tiles"
                          ) -> tuple[dict[str, np.ndarray], float, str]:
    """`backend_outputs` by whole-field passes, one per image of `tiles`, read back into its tiles' layout as the
    export's whole-field check does (hep2edge.export.field_check.field_tile_outputs)."""
    from hep2edge.export.field_check import field_tile_outputs, held_out_images

    images = list(held_out_images(tiles, contract).values())
    with open_backend(choice, 1) as backend:
        elapsed = 0.0

        def timed(field: np.ndarray) -> dict[str, np.ndarray]:
            nonlocal elapsed
            started = time.perf_counter()
            out = backend.infer_field(field)
            elapsed += time.perf_counter() - started
            return out

        outputs = field_tile_outputs(timed, images, contract, pooling)
        described = backend.describe()
    return outputs, elapsed * 1000 / len(tiles), described


def level_metrics(outputs: dict[str, np.ndarray], tiles: Any, threshold: float) -> dict[str, dict[str, float]]:
    """Patch, image (mean of its tiles) and patient (mean of its images) metrics, as training reports them."""
    from hep2edge.export.verify import predictions
    from hep2edge.metrics import evaluate_levels

    levels = evaluate_levels(predictions(outputs, tiles, threshold))
    return {level: {k: float(levels[level][k]) for k in METRICS} for level in LEVELS}


def output_differences(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per output against the reference's."""
    return {name: float(np.abs(outputs[name].astype(np.float64) - reference[name]).max()) for name in reference}


def changes(metrics: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, dict]:
    return {level: {k: metrics[level][k] - reference[level][k] for k in METRICS} for level in LEVELS}
