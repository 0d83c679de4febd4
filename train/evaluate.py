"""Validation: predict every held-out tile, score patch / image / patient levels with hep2edge.metrics.

With a dense head on (the tiles carry instance labels), the patch level also holds the per-cell scores of
hep2edge.train.cell_eval: aji, pq, dq, sq, precision, recall, f1, centroid_f1, count errors, and with the
pattern map miou and iou_<class>.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hep2edge.metrics import LEVELS, PatchPredictions, evaluate_levels, pattern_confusion, segmentation_counts
from hep2edge.normalization import NormalizationSpec, normalize_tiles
from hep2edge.train.cell_eval import CellScorer
from hep2edge.train.losses import MultiTaskLoss
from hep2edge.train.targets import DISTANCE_SCALE
from hep2edge.train.tiles_dataset import TileSet, valid_pixels

MASK_THRESHOLD = 0.5
SCORE_PARTS: tuple[str, ...] = ("dice", "pattern_accuracy", "intensity_accuracy")
DISTANCE_SCORE_PART = "aji"  # joins the score when the model has the distance head: the checkpoint must find cells


@dataclass
class Evaluation:
    """Validation losses (mask, pattern, intensity[, distance][, pattern_map]), metrics per level, confusions."""

    losses: list[float]
    levels: dict[str, dict[str, float]]
    confusion: dict[str, list[list[int]]]
    score_parts: tuple[str, ...] = SCORE_PARTS

    @property
    def loss(self) -> float:
        return float(sum(self.losses))

    @property
    def score(self) -> float:
        """Mean of patch-level Dice, pattern accuracy, intensity accuracy and, with the distance head, AJI (higher is
        better)."""
        return float(np.mean([self.levels["patch"][k] for k in self.score_parts]))

    def metrics(self) -> dict[str, Any]:
        """The dict stored in checkpoints and summaries: score, val_loss and one dict per level."""
        return {"score": self.score, "val_loss": self.loss, **{level: dict(self.levels[level]) for level in LEVELS}}

    def monitored(self, monitor: str) -> float:
        if monitor == "score":
            return self.score
        if monitor == "val_loss":
            return self.loss
        return float(self.levels["patch"][monitor])


def to_input(images: np.ndarray, spec: NormalizationSpec, device: torch.device) -> torch.Tensor:
    """Raw (N, t, t[, C]) tiles -> (N, C, t, t) float32 tensor on `device`, normalised as at runtime."""
    return torch.from_numpy(normalize_tiles(images, spec)).to(device)


def batch_losses(loss_fn: MultiTaskLoss, out: dict[str, torch.Tensor], batch: TileSet,
                 device: torch.device) -> torch.Tensor:
    """(T,) unweighted losses of one batch; the dense targets are passed when the loss trains those heads."""
    targets = {
        "mask": torch.from_numpy(batch.masks[:, None]).to(device),
        "pattern": torch.from_numpy(batch.pattern).to(device),
        "intensity": torch.from_numpy(batch.intensity).to(device),
    }
    if loss_fn.distance and batch.distance is not None:
        targets["distance"] = torch.from_numpy(batch.distance[:, None]).to(device).float() / DISTANCE_SCALE
    if loss_fn.pattern_map and batch.classes is not None:
        targets["classes"] = torch.from_numpy(batch.classes).to(device).long()
    return loss_fn(out, **targets)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tiles: TileSet,
    spec: NormalizationSpec,
    loss_fn: MultiTaskLoss,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """Run `model` (eval mode) over `tiles`; mask pixels in the pad are never foreground.

    Tiles with instance labels are also scored per cell (CellScorer), into the patch level.
    """
    model.eval()
    parts: list[PatchPredictions] = []
    loss_sum: np.ndarray | float = 0.0
    cells = CellScorer() if tiles.instances is not None else None
    score_parts: tuple[str, ...] = SCORE_PARTS
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
    for start in range(0, len(tiles), batch_size):
        batch = tiles.subset(np.arange(start, min(start + batch_size, len(tiles))))
        with autocast:
            out = model(to_input(batch.images, spec, device))
        loss_sum = loss_sum + batch_losses(loss_fn, out, batch, device).float().cpu().numpy() * len(batch)
        pred = (torch.sigmoid(out["mask"].float())[:, 0] > MASK_THRESHOLD).cpu().numpy()
        if cells is not None and batch.instances is not None:
            cells.add(out, pred, valid_pixels(batch.valid, pred.shape[-1]), batch.instances, batch.classes)
            if "distance" in out:
                score_parts = (*SCORE_PARTS, DISTANCE_SCORE_PART)
        parts.append(PatchPredictions(
            image_ids=batch.image_ids,
            patient_ids=batch.patient_ids,
            pattern_true=batch.pattern,
            pattern_prob=torch.softmax(out["pattern"].float(), 1).cpu().numpy(),
            intensity_true=batch.intensity,
            intensity_prob=torch.sigmoid(out["intensity"].float())[:, 0].cpu().numpy(),
            seg_counts=segmentation_counts(pred, batch.masks, valid_pixels(batch.valid, pred.shape[-1])),
        ))
        if on_batch is not None:
            on_batch(len(batch))
    predictions = PatchPredictions.concat(parts)
    levels = evaluate_levels(predictions)
    if cells is not None:
        levels["patch"] |= cells.metrics()
    confusion = {level: pattern_confusion(predictions, level).tolist() for level in LEVELS}
    return Evaluation([float(v) for v in np.atleast_1d(loss_sum / max(len(tiles), 1))], levels, confusion,
                      score_parts)


def is_better(value: float, best: float | None, monitor: str) -> bool:
    """Whether `value` improves on `best` for this monitor (val_loss: lower; others: higher)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best
