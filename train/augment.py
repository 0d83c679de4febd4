"""Training augmentation: flips and 90-degree rotations (image, mask and per-pixel targets together), then
brightness / contrast / gamma / Gaussian noise on the normalised input.

All randomness comes from one numpy Generator whose state is saved with the run, so a resumed run
draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the photometric changes; each is applied to a tile with probability `p`."""

    p: float = 0.5
    brightness: float = 0.03  # additive shift in [-b, b]; kept small: brightness is the intensity label
    contrast: float = 0.1  # scale around the tile mean in [1 - c, 1 + c]
    gamma: tuple[float, float] = (0.85, 1.2)
    noise_std: float = 0.02  # Gaussian noise std drawn in [0, noise_std]


class Augmenter:
    """Seeded batch augmentation; `state_dict()` / `load_state_dict()` carry the generator state."""

    def __init__(self, seed: int, settings: AugmentSettings | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.settings = settings or AugmentSettings()

    def geometric(self, images: np.ndarray, masks: np.ndarray, *maps: np.ndarray) -> tuple[np.ndarray, ...]:
        """(N, t, t[, C]) images, (N, t, t) masks and any (N, t, t) per-pixel targets (instances, distance,
        pattern classes) -> all with the same random flip/rotation per tile; the draws do not depend on `maps`."""
        arrays = (images, masks, *maps)
        outs = tuple(np.empty_like(a) for a in arrays)
        turns = self.rng.integers(0, 4, size=len(images))
        flips = self.rng.random(len(images)) < 0.5
        for i in range(len(images)):
            for array, out in zip(arrays, outs):
                tile = array[i][:, ::-1] if flips[i] else array[i]
                out[i] = np.rot90(tile, int(turns[i]), axes=(0, 1))
        return outs

    def photometric(self, x: np.ndarray) -> np.ndarray:
        """(N, C, t, t) float32 in about [0, 1] -> gamma, contrast, brightness and noise per tile."""
        s, n = self.settings, len(x)
        shape = (n, 1, 1, 1)
        pick = self.rng.random((4, n)).reshape(4, *shape) < s.p
        gamma = self.rng.uniform(s.gamma[0], s.gamma[1], shape)
        contrast = self.rng.uniform(1 - s.contrast, 1 + s.contrast, shape)
        shift = self.rng.uniform(-s.brightness, s.brightness, shape)
        sigma = self.rng.uniform(0.0, s.noise_std, shape)
        noise = self.rng.standard_normal(x.shape)
        y = x.astype(np.float64)
        y = np.where(pick[0], np.clip(y, 0.0, None) ** gamma, y)
        mean = y.mean(axis=(1, 2, 3), keepdims=True)
        y = np.where(pick[1], (y - mean) * contrast + mean, y)
        y = np.where(pick[2], y + shift, y)
        y = np.where(pick[3], y + sigma * noise, y)
        return y.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
