"""PyTorch backend: a training checkpoint run directly (development, and the GPU stand-in without TensorRT).

The only runtime module that imports torch; the registry imports it only when it is chosen.
"""

from __future__ import annotations

import numpy as np
import torch

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.runtime.backends.base import Backend
from hep2edge.train.checkpoint import load_checkpoint
from hep2edge.train.model import MultiTaskUnet


class TorchBackend(Backend):
    """Loads a hep2edge checkpoint and applies the same activations the exported graph carries."""

    name = "torch"
    _model: MultiTaskUnet | None = None
    _device: torch.device = torch.device("cpu")

    def _load(self) -> ModelContract:
        if not self.config.model.is_file():
            raise ConfigError(f"{self.config.model}: no such checkpoint file")
        want = self.config.device
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device cuda but torch {torch.__version__} sees no GPU; use --device cpu")
        self._device = torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")
        loaded = load_checkpoint(self.config.model, device=str(self._device))
        if loaded.config.in_channels != loaded.contract.channels:
            raise ConfigError(
                f"{self.config.model}: model takes {loaded.config.in_channels} channels but its contract says "
                f"{loaded.contract.channels}; re-save the checkpoint with `hep2edge train`"
            )
        self._model = loaded.model.eval()
        return loaded.contract

    def device_name(self) -> str:
        return str(self._device)

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._model is not None
        out = self._model(torch.from_numpy(batch).to(self._device))
        probabilities = {
            "mask": torch.sigmoid(out["mask"]),
            "pattern": torch.softmax(out["pattern"], dim=1),
            "intensity": torch.sigmoid(out["intensity"]),
        }
        return {name: value.float().cpu().numpy() for name, value in probabilities.items()}

    def _release(self) -> None:
        self._model = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
