"""The activation each model output gets at inference, said once for the ONNX graph and the torch backend."""

from __future__ import annotations

import torch

from hep2edge.contract import FIELD_OUTPUTS

SOFTMAX_OUTPUTS = ("pattern", "pattern_map")  # over dim 1 (classes)


def activate(name: str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities of output `name`: softmax over classes, sigmoid otherwise; the field maps stay logits."""
    if name in FIELD_OUTPUTS:
        return logits
    if name in SOFTMAX_OUTPUTS:
        return torch.softmax(logits, dim=1)
    return torch.sigmoid(logits)
