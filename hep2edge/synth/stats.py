"""A few hand-made texture statistics of a stained field, used to show the synthetic data is learnable.

Brightness features (`mean_fg`, `p99_fg`, `snr`) carry intensity; the others are ratios, so they
describe the pattern whatever the exposure.
"""

from __future__ import annotations

import cv2
import numpy as np

FEATURES = (
    "mean_fg", "p99_fg", "snr", "cv_fg", "bright_frac", "fine_texture", "coarse_texture",
    "peaks_per_kpx", "peak_contrast", "rim_center", "skew_fg", "cyto_nuc",
)


def _nuclei(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Bright cores (Otsu above the median of the cells), a proxy for nuclei or stained structures."""
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 3.0)
    values = smooth[mask]
    threshold = float(np.percentile(values, 50)) if values.size else 0.0
    return (smooth > threshold) & mask


def texture_stats(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """(H, W) uint8 image and bool mask -> {feature name: value} (see FEATURES)."""
    img = image.astype(np.float32)
    mask = mask.astype(bool)
    if mask.sum() < 50:
        return dict.fromkeys(FEATURES, 0.0)
    fg, bg = img[mask], img[~mask] if (~mask).any() else np.zeros(1, np.float32)
    bg_level = float(np.median(bg))
    signal = fg - bg_level
    mean = float(max(signal.mean(), 1e-3))
    fine = img - cv2.GaussianBlur(img, (0, 0), 1.5)
    coarse = cv2.GaussianBlur(img, (0, 0), 2.5) - cv2.GaussianBlur(img, (0, 0), 6.0)
    smooth = cv2.GaussianBlur(img, (0, 0), 1.2)
    peaks = (smooth >= cv2.dilate(smooth, np.ones((5, 5), np.uint8))) & mask
    peaks &= smooth > bg_level + 2.0 * float(np.std(bg) + 1.0) + 0.5 * mean
    nuclei = _nuclei(image, mask)
    dist = cv2.distanceTransform(nuclei.astype(np.uint8), cv2.DIST_L2, 3)
    rim, core = (dist > 0) & (dist <= 4), dist > 8
    centered = signal - signal.mean()
    return {
        "mean_fg": mean,
        "p99_fg": float(np.percentile(signal, 99)),
        "snr": mean / float(np.std(bg) + 1e-3),
        "cv_fg": float(signal.std() / mean),
        "bright_frac": float((signal > 2 * mean).mean()),
        "fine_texture": float(np.abs(fine[mask]).mean() / mean),
        "coarse_texture": float(np.abs(coarse[mask]).mean() / mean),
        "peaks_per_kpx": float(peaks.sum() * 1000 / mask.sum()),
        "peak_contrast": float((smooth[peaks].mean() - bg_level) / mean) if peaks.any() else 0.0,
        "rim_center": float((img[rim].mean() + 1) / (img[core].mean() + 1)) if rim.any() and core.any() else 1.0,
        "skew_fg": float((centered**3).mean() / (centered.std() ** 3 + 1e-6)),
        "cyto_nuc": float((img[mask & ~nuclei].mean() - bg_level + 1) / (img[nuclei].mean() - bg_level + 1)),
    }


def feature_vector(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """texture_stats as a (len(FEATURES),) float64 vector in FEATURES order."""
    stats = texture_stats(image, mask)
    return np.array([stats[name] for name in FEATURES], dtype=np.float64)
