"""The task losses: segmentation (dice | bce | dice+bce), pattern cross-entropy, intensity BCE, and for the dense
heads distance (L1 | MSE on the sigmoid) and pattern map (cross-entropy [+ soft Dice over its 8 classes])."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hep2edge.registry import Registry

SegLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SEG_LOSSES: Registry[SegLoss] = Registry("segmentation loss")


@SEG_LOSSES.register("dice")
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch; logits and target (N, 1, H, W)."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


@SEG_LOSSES.register("bce")
def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


@SEG_LOSSES.register("dice+bce")
def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return soft_dice_loss(logits, target) + bce_loss(logits, target)


DISTANCE_LOSSES: Registry[SegLoss] = Registry("distance loss")
DISTANCE_LOSSES.add("l1", F.l1_loss)
DISTANCE_LOSSES.add("mse", F.mse_loss)


def distance_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 or MSE between sigmoid(logits) and the 0..1 target, both (N, 1, H, W), mean over every pixel."""
    return DISTANCE_LOSSES.get(kind)(torch.sigmoid(logits.float()), target.float())


def multiclass_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over the K classes of the soft Dice of softmax(logits) (N, K, H, W) with target (N, H, W) ids."""
    prob = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), prob.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    total = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1.0 - ((2.0 * inter + eps) / (total + eps)).mean()


def pattern_map_loss(logits: torch.Tensor, target: torch.Tensor, dice: bool = True) -> torch.Tensor:
    """Per-pixel cross-entropy of (N, 8, H, W) logits against (N, H, W) class ids, plus soft Dice when `dice`."""
    loss = F.cross_entropy(logits.float(), target.long())
    return loss + multiclass_dice_loss(logits, target) if dice else loss


def inverse_frequency_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """(K,) weights n / (K_present * count_k) (mean weight over the samples is 1); 1 for absent classes."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


class MultiTaskLoss(nn.Module):
    """Model outputs + targets -> (T,) tensor of unweighted losses: mask, pattern, intensity[, distance][, pattern_map].

    `distance` / `pattern_map`: whether those heads are trained (their targets must then be passed).
    """

    class_weights: torch.Tensor

    def __init__(
        self, seg_loss: str = "dice", class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
        distance: bool = False, pattern_map: bool = False, distance_kind: str = "l1", pattern_map_dice: bool = True,
    ) -> None:
        super().__init__()
        self.seg_loss = SEG_LOSSES.get(seg_loss)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.empty(0))
        self.label_smoothing = label_smoothing
        self.distance, self.pattern_map = distance, pattern_map
        DISTANCE_LOSSES.get(distance_kind)  # an unknown name fails here, not at the first step
        self.distance_kind = distance_kind
        self.pattern_map_dice = pattern_map_dice

    def forward(
        self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, pattern: torch.Tensor, intensity: torch.Tensor,
        distance: torch.Tensor | None = None, classes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`distance`: (N, 1, H, W) float 0..1 target; `classes`: (N, H, W) pattern-map class ids."""
        weights = self.class_weights if self.class_weights.numel() else None
        seg = self.seg_loss(outputs["mask"], mask)
        pat = F.cross_entropy(
            outputs["pattern"].float(), pattern, weight=weights, label_smoothing=self.label_smoothing
        )
        inten = F.binary_cross_entropy_with_logits(outputs["intensity"].float().squeeze(1), intensity.float())
        losses = [seg, pat, inten]
        if self.distance:
            if distance is None:
                raise ValueError("the distance head is trained but no distance target was given")
            losses.append(distance_loss(outputs["distance"], distance, self.distance_kind))
        if self.pattern_map:
            if classes is None:
                raise ValueError("the pattern-map head is trained but no pattern classes were given")
            losses.append(pattern_map_loss(outputs["pattern_map"], classes, self.pattern_map_dice))
        return torch.stack(losses)
