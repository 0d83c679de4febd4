"""Input normalisation shared by training, export verification and every runtime backend.

The numpy functions here are the reference; the CUDA preprocessing kernel is tested against them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MODES = ("fixed", "minmax")


@dataclass(frozen=True)
class NormalizationSpec:
    """`fixed`: x / dtype max (255 for uint8, 65535 for uint16); `minmax`: per tile to [0, 1].

    Then (x - mean) / std.
    """

    mode: str = "fixed"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown normalisation mode '{self.mode}'; valid: {', '.join(MODES)}")
        if self.std <= 0:
            raise ValueError(f"normalisation std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> NormalizationSpec:
        return cls(str(data["mode"]), float(data["mean"]), float(data["std"]))  # type: ignore[arg-type]


def dtype_scale(dtype: np.dtype) -> float:
    """The value that maps to 1.0 under `fixed` normalisation."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def normalize_tiles(tiles: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    """(N, t, t) or (N, t, t, C) raw tiles -> (N, C, t, t) float32 network input."""
    if tiles.ndim == 3:
        tiles = tiles[..., None]
    if tiles.ndim != 4:
        raise ValueError(f"expected (N, t, t[, C]) tiles, got shape {tiles.shape}")
    x = tiles.astype(np.float32)
    if spec.mode == "fixed":
        x *= np.float32(1.0 / dtype_scale(tiles.dtype))
    else:
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        span = hi - lo
        x = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
    if spec.mean != 0.0 or spec.std != 1.0:
        x = (x - np.float32(spec.mean)) / np.float32(spec.std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
