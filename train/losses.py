"""The three task losses: segmentation (dice | bce | dice+bce), pattern cross-entropy, intensity BCE."""

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


def inverse_frequency_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """(K,) weights n / (K_present * count_k) (mean weight over the samples is 1); 1 for absent classes."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


class MultiTaskLoss(nn.Module):
    """Model outputs + targets -> (3,) tensor [mask, pattern, intensity] of unweighted losses."""

    class_weights: torch.Tensor

    def __init__(
        self, seg_loss: str = "dice", class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.seg_loss = SEG_LOSSES.get(seg_loss)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.empty(0))
        self.label_smoothing = label_smoothing

    def forward(
        self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, pattern: torch.Tensor, intensity: torch.Tensor
    ) -> torch.Tensor:
        weights = self.class_weights if self.class_weights.numel() else None
        seg = self.seg_loss(outputs["mask"], mask)
        pat = F.cross_entropy(
            outputs["pattern"].float(), pattern, weight=weights, label_smoothing=self.label_smoothing
        )
        inten = F.binary_cross_entropy_with_logits(outputs["intensity"].float().squeeze(1), intensity.float())
        return torch.stack([seg, pat, inten])
