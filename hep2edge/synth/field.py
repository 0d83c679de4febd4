"""Compose one synthetic IIF field: cells, debris, blur, uneven illumination, background and noise.

Intensity class sets the exposure: `positive` fields are brighter, so with the same background and
read noise their signal-to-noise ratio is higher than `intermediate` ones. Noise is Poisson shot noise
(normal approximation, variance = mean / conversion gain) plus Gaussian read noise, drawn in one pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from hep2edge.labels import PATTERNS
from hep2edge.synth.canvas import Layers
from hep2edge.synth.cells import Cell, cell_frame, layout_cells
from hep2edge.synth.patterns import renderer

MITSP = PATTERNS.index("mitsp")
EXPOSURE = {0: (0.28, 0.48), 1: (0.7, 1.0)}  # intensity class -> range of peak gain (fraction of 255)


@dataclass(frozen=True)
class PatientStyle:
    """What stays fixed over one patient's images."""

    pattern: int
    intensity: int
    gain: float  # patient-level brightness factor around 1
    variant: float  # pattern style knob in [0, 1]
    cell_diameter: float  # mean nucleus diameter in pixels

    @classmethod
    def draw(cls, rng: np.random.Generator, pattern: int, intensity: int) -> PatientStyle:
        return cls(pattern, intensity, float(rng.uniform(0.85, 1.15)), float(rng.random()),
                   float(rng.uniform(48.0, 60.0)))


def _ensure_mitosis(cells: list[Cell], height: int, width: int) -> list[Cell]:
    """Make the cell nearest the centre mitotic if none inside the image is (a spindle needs one to show)."""
    if not cells or any(c.mitotic and 0 <= c.cy < height and 0 <= c.cx < width for c in cells):
        return cells
    i = int(np.argmin([(c.cy - height / 2) ** 2 + (c.cx - width / 2) ** 2 for c in cells]))
    cells[i] = dataclasses.replace(cells[i], mitotic=True, b=cells[i].a * 0.95)
    return cells


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth multiplicative field around 1: vignetting plus a tilt, built small and resized."""
    h, w = max(2, height // 16), max(2, width // 16)
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.4, 0.4, 2)
    vignette = 1 - rng.uniform(0.1, 0.35) * ((y - cy) ** 2 + (x - cx) ** 2) / 2
    tilt = 1 + rng.uniform(-0.12, 0.12) * x + rng.uniform(-0.12, 0.12) * y
    return cv2.resize((vignette * tilt).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def _debris(rng: np.random.Generator, signal: np.ndarray) -> None:
    """A few bright specks and fibres outside the mask (dust, precipitate)."""
    height, width = signal.shape
    scale = height * width / (1040 * 1388)
    for _ in range(int(rng.poisson(3 * scale + 0.3))):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        amp = float(rng.uniform(0.2, 1.2))
        if rng.random() < 0.6:
            axes = (int(rng.integers(1, 6)), int(rng.integers(1, 4)))
            cv2.ellipse(signal, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, amp, -1)
        else:
            length = rng.uniform(15, 60)
            angle = rng.uniform(0, np.pi)
            end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
            cv2.line(signal, (x, y), end, amp * 0.6, int(rng.integers(1, 3)))


def compact_ids(ids: np.ndarray) -> np.ndarray:
    """Instance ids renumbered 1..n in their order (0 stays background) as uint16; ValueError over 65535 cells."""
    present = np.unique(ids)
    present = present[present > 0]
    if len(present) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(present)} cells do not fit uint16 instance ids")
    lut = np.zeros(int(present[-1]) + 1 if len(present) else 1, np.uint16)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
    return lut[ids]


def compose_field(
    rng: np.random.Generator, height: int, width: int, style: PatientStyle
) -> tuple[np.ndarray, np.ndarray]:
    """One field: ((H, W) uint8 image, (H, W) bool mask of the cells)."""
    image, mask, _ = compose_field_instances(rng, height, width, style)
    return image, mask


def compose_field_instances(
    rng: np.random.Generator, height: int, width: int, style: PatientStyle
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One field: ((H, W) uint8 image, (H, W) bool mask, (H, W) uint16 instance ids).

    Ids are 1..n, one per cell visible in the image, numbered in drawing order; where cells overlap, a pixel
    belongs to the cell it lies deepest in (see `Layers`). `ids > 0` equals the mask.
    Drawing the ids takes no random numbers: image and mask are those `compose_field` always gave.
    """
    mitsp = style.pattern == MITSP
    diameter = style.cell_diameter * rng.uniform(0.93, 1.07)
    cells = layout_cells(rng, height, width, diameter, occupancy=rng.uniform(0.6, 0.95),
                         mitotic_fraction=0.08 if mitsp else 0.025)
    if mitsp:
        cells = _ensure_mitosis(cells, height, width)
    layers = Layers(height, width)
    draw = renderer(style.pattern)
    for index, cell in enumerate(cells):
        frame = cell_frame(cell, height, width)
        if frame is not None:
            layers.gain, layers.cell_id = cell.brightness, index + 1
            draw(cell, frame, layers, rng, style.variant)
    signal = layers.render()
    _debris(rng, signal)
    signal = np.asarray(cv2.GaussianBlur(signal, (0, 0), rng.uniform(0.7, 1.6)), np.float32)
    small = cv2.resize(signal, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    glow = cv2.resize(cv2.GaussianBlur(small, (0, 0), 4.0), (width, height), interpolation=cv2.INTER_LINEAR)
    signal = signal + np.float32(rng.uniform(0.05, 0.2)) * glow
    lo, hi = EXPOSURE[style.intensity]
    peak = 255.0 * rng.uniform(lo, hi) * style.gain
    dn = signal * _illumination(rng, height, width)
    dn *= np.float32(peak)
    dn += np.float32(rng.uniform(4, 14))  # background offset, grey levels
    conversion = rng.uniform(0.5, 1.5)  # photons per grey level
    read_noise = rng.uniform(1.0, 2.5)  # grey levels
    sd = dn * np.float32(1 / conversion)  # shot-noise variance
    sd += np.float32(read_noise**2)
    np.sqrt(sd, out=sd)
    noise = rng.standard_normal(dn.shape, dtype=np.float32)
    noise *= sd
    dn += noise
    np.rint(dn, out=dn)
    image = np.clip(dn, 0, 255, out=dn).astype(np.uint8)
    return image, layers.mask.astype(bool), compact_ids(layers.ids)
