"""Task metrics of one backend on a held-out tile set: the same functions export verification uses."""

from __future__ import annotations

import time
from pathlib import Path
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


POOLINGS = ("tiles", "field")  # whole-field inference: pattern/intensity pooled per tile region, or over the field


def field_backend_outputs(choice: Choice, tiles: Any, contract: Any, pooling: str = "tiles"
                          ) -> tuple[dict[str, np.ndarray], float, str]:
    """`backend_outputs` by whole-field passes: one pass per image of `tiles`, read back into its tiles' layout
    (mask probabilities cut on the grid; pattern / intensity pooled per tile region or over the whole field)."""
    from hep2edge.imageio import read_image
    from hep2edge.runtime.field import field_input, field_outputs, field_verdict
    from hep2edge.tiling import extract_tiles, tile_grid

    parts: dict[str, list[np.ndarray]] = {"mask": [], "pattern": [], "intensity": []}
    images = list(dict.fromkeys(str(i) for i in tiles.image_ids))  # in the tile set's order
    with open_backend(choice, 1) as backend:
        elapsed = 0.0
        for image in images:
            gray = read_image(Path(image), contract.channel_policy)
            grid = tile_grid(gray.shape[0], gray.shape[1], contract.tile)
            started = time.perf_counter()
            out = backend.infer_field(field_input(gray, contract))
            elapsed += time.perf_counter() - started
            evidence = field_outputs(out, grid, contract)
            pattern, intensity = evidence.pattern, evidence.intensity
            if pooling == "field":
                whole, positive = field_verdict(out, grid.height, grid.width, contract.field_stride)
                pattern, intensity = np.repeat(whole[None], len(grid), 0), np.full(len(grid), positive)
            parts["mask"].append(extract_tiles(out["mask"][0, 0, : grid.height, : grid.width], grid)[:, None])
            parts["pattern"].append(pattern)
            parts["intensity"].append(np.asarray(intensity, dtype=np.float32)[:, None])
        described = backend.describe()
    return ({name: np.concatenate(values) for name, values in parts.items()}, elapsed * 1000 / len(tiles),
            described)


def agreement(field: dict[str, np.ndarray], tiles: dict[str, np.ndarray], tile_set: Any, threshold: float
              ) -> dict[str, float]:
    """How whole-field outputs agree with tile-mode ones: mask Dice over every in-image pixel, and the share of
    images whose pattern (mean of its tiles' probabilities) is the same."""
    from hep2edge.metrics import dice

    valid = np.asarray(tile_set.valid, dtype=bool)  # (N, t, t): inside the image, not pad
    a, b = field["mask"][:, 0][valid] > threshold, tiles["mask"][:, 0][valid] > threshold
    ids = np.asarray(tile_set.image_ids, dtype=str)
    same = [np.argmax(field["pattern"][ids == image].mean(0)) == np.argmax(tiles["pattern"][ids == image].mean(0))
            for image in dict.fromkeys(ids)]
    return {"mask_dice": dice(a, b), "pattern_agreement": float(np.mean(same))}


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
