"""Whole-field check at export: the fp32 file run as `--inference field` runs it, scored on the held-out images
against its own tile mode, so the report says whether this model may analyse whole fields.

A network trained on tiles sees, in one pass over a field, context it never saw in training; how far that
moves its outputs depends on the model (a 128 px mobilenet_v2 U-Net: mask Dice 0.955 against its tiles), so it
is measured per model instead of assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.export.config import Limits
from hep2edge.export.tiles import TileSet
from hep2edge.export.verify import TASK_METRICS, task_metrics
from hep2edge.imageio import read_image
from hep2edge.metrics import dice
from hep2edge.runtime.field import check_inference_mode, field_input, field_problem, field_verdict, pooled_evidence
from hep2edge.tiling import extract_tiles, tile_grid

Outputs = dict[str, np.ndarray]
FieldRunner = Callable[[np.ndarray], Outputs]  # (1, C, Hp, Wp) -> {"mask", "pattern_logits", "intensity_logits"}
POOLINGS = ("tiles", "field")  # per tile region (what the runtime writes), or over the whole field


def field_tile_outputs(run_field: FieldRunner, images: Sequence[np.ndarray], contract: ModelContract,
                       pooling: str = "tiles") -> Outputs:
    """One whole-field pass per (H, W) image, read back into the tile layout: mask probabilities (N, 1, t, t)
    cut on each image's grid, pattern (N, 7) and intensity (N, 1) pooled per tile region (or over the field)."""
    parts: dict[str, list[np.ndarray]] = {"mask": [], "pattern": [], "intensity": []}
    for gray in images:
        grid = tile_grid(gray.shape[0], gray.shape[1], contract.tile)
        out = run_field(field_input(gray, contract))
        pattern, intensity = pooled_evidence(out, grid, contract.field_stride)
        if pooling == "field":
            whole, positive = field_verdict(out, grid.height, grid.width, contract.field_stride)
            pattern, intensity = np.repeat(whole[None], len(grid), 0), np.full(len(grid), positive)
        parts["mask"].append(extract_tiles(out["mask"][0, 0, : grid.height, : grid.width], grid)[:, None])
        parts["pattern"].append(np.asarray(pattern, dtype=np.float32))
        parts["intensity"].append(np.asarray(intensity, dtype=np.float32)[:, None])
    return {name: np.concatenate(values) for name, values in parts.items()}


def agreement(field_out: Outputs, tile_out: Outputs, valid: np.ndarray, image_ids: np.ndarray,
              threshold: float) -> dict[str, float]:
    """Mask Dice of whole field against tiles over every in-image pixel, and the share of images whose pattern
    (the mean of its tiles' probabilities, as the result JSON's verdict) is the same."""
    inside = np.asarray(valid, dtype=bool)
    a, b = field_out["mask"][:, 0][inside] > threshold, tile_out["mask"][:, 0][inside] > threshold
    ids = np.asarray(image_ids, dtype=str)
    verdicts = [(field_out["pattern"][ids == image].mean(0), tile_out["pattern"][ids == image].mean(0))
                for image in dict.fromkeys(ids)]
    same = [np.argmax(by_field) == np.argmax(by_tiles) for by_field, by_tiles in verdicts]
    return {"mask_dice": dice(a, b), "pattern_agreement": float(np.mean(same))}


@dataclass
class FieldCheck:
    """The fp32 file in whole-field mode against its own tile mode (same runtime, same held-out images)."""

    runtime: str = "onnxruntime"
    images: int = 0
    largest: tuple[int, int] = (0, 0)  # (H, W) of the largest image checked: small images understate the gap
    skipped: str = ""  # why the check did not run (a minmax-normalised model, images smaller than a tile)
    mask_dice_vs_tiles: float = float("nan")
    pattern_agreement: float = float("nan")
    tile_metrics: dict[str, float] = field(default_factory=dict)  # patch-level TASK_METRICS against the truth
    field_metrics: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def within_limits(self) -> bool:
        return not self.skipped and not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"within_limits": self.within_limits}


def held_out_images(tiles: Any, contract: ModelContract) -> dict[str, np.ndarray]:
    """Each image of a tile set read whole, as the model reads it, in the tile set's order (by its id)."""
    ids = dict.fromkeys(map(str, tiles.image_ids))
    return {image: read_image(Path(image), contract.channel_policy) for image in ids}


def _whole_field_images(tiles: TileSet, contract: ModelContract) -> tuple[dict[str, np.ndarray], str]:
    """The held-out images a whole-field pass takes, read (in tile-set order), or {} and why none does."""
    try:
        check_inference_mode("field", contract, "this model")
    except ConfigError as exc:
        return {}, str(exc)
    grays = held_out_images(tiles, contract)
    kept = {image: gray for image, gray in grays.items() if field_problem(*gray.shape[:2], contract) is None}
    return kept, "" if kept else f"no held-out image is at least one {contract.tile} px tile on each side"


def _subset(tiles: TileSet, keep: np.ndarray) -> TileSet:
    arrays = {name: getattr(tiles, name)[keep] for name in ("images", "masks", "valid", "pattern", "intensity",
                                                            "image_ids", "patient_ids")}
    return replace(tiles, **arrays, instances=None, classes=None)


def run_field_check(run_field: FieldRunner, tile_out: Outputs, tiles: TileSet, contract: ModelContract,
                    limits: Limits, runtime: str = "onnxruntime") -> FieldCheck:
    """Score whole-field outputs against the truth and against `tile_out` (the same file's tile outputs);
    a drop past the verification limits is recorded in `failures` (the export itself does not fail on it)."""
    images, skipped = _whole_field_images(tiles, contract)
    if skipped:
        return FieldCheck(runtime=runtime, skipped=skipped)
    keep = np.isin(tiles.image_ids, list(images))
    kept = _subset(tiles, keep)
    field_out = field_tile_outputs(run_field, list(images.values()), contract)
    tile_kept = {name: tile_out[name][keep] for name in ("mask", "pattern", "intensity")}
    threshold = contract.mask_threshold
    sides = [gray.shape[:2] for gray in images.values()]
    largest = (max(h for h, _ in sides), max(w for _, w in sides))
    check = FieldCheck(runtime=runtime, images=len(images), largest=largest)
    shared = agreement(field_out, tile_kept, kept.valid, kept.image_ids, threshold)
    check.mask_dice_vs_tiles, check.pattern_agreement = shared["mask_dice"], shared["pattern_agreement"]
    check.tile_metrics = {k: task_metrics(tile_kept, kept, threshold)["patch"][k] for k in TASK_METRICS}
    check.field_metrics = {k: task_metrics(field_out, kept, threshold)["patch"][k] for k in TASK_METRICS}
    for name, limit in limits.task_drops().items():
        drop = check.tile_metrics[name] - check.field_metrics[name]
        if not drop <= limit:
            check.failures.append(f"{name} drops by {drop:.4f} > {limit:g} against tiles")
    return check


def check_onnx_field(path: Path, tile_out: Outputs, tiles: TileSet, contract: ModelContract,
                     limits: Limits) -> FieldCheck:
    """`run_field_check` with the file opened by the runtime's ONNX Runtime backend, as `--inference field` runs it."""
    from hep2edge.runtime.backends import create_backend
    from hep2edge.runtime.settings import BackendConfig

    with create_backend("onnxruntime", BackendConfig(model=path, device="cpu")) as backend:
        return run_field_check(backend.infer_field, tile_out, tiles, contract, limits, backend.name)
