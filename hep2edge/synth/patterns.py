"""One renderer per ANA pattern: how one cell (interphase or mitotic) is stained.

A renderer draws relative staining (about 0..1) of one cell into the field layers; the field then
scales it by the cell's brightness and the image's intensity class. `variant` in [0, 1] is a
per-patient style knob (e.g. fine vs coarse speckles, number of centromere dots).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hep2edge.labels import PATTERNS
from hep2edge.registry import Registry
from hep2edge.synth.canvas import Layers, points_in_nucleus, to_image
from hep2edge.synth.cells import Cell, CellFrame

Renderer = Callable[[Cell, CellFrame, Layers, np.random.Generator, float], None]
RENDERERS: Registry[Renderer] = Registry("synthetic pattern")


def nucleus_fill(frame: CellFrame, edge: float = 7.0) -> np.ndarray:
    """1 inside the nucleus, 0 outside, a soft rim."""
    return np.clip((1.0 - frame.rho) * edge, 0.0, 1.0)


def cytoplasm_fill(frame: CellFrame, nucleus: np.ndarray | None = None) -> np.ndarray:
    """1 in the cytoplasm ring around the nucleus, 0 elsewhere (`nucleus`: its fill, if computed)."""
    inside = nucleus_fill(frame, 4.0) if nucleus is None else nucleus
    return np.clip((1.0 - frame.rho_cyto) * 5.0, 0.0, 1.0) * (1.0 - inside)


def _base(frame: CellFrame, layers: Layers, nucleus: np.ndarray | float, cyto: float) -> np.ndarray:
    """Paste nucleus + dim cytoplasm staining and mark the cell in the mask; returns the nucleus fill."""
    fill = nucleus_fill(frame)
    cyt = cytoplasm_fill(frame, fill)
    layers.paste(frame, (fill * nucleus + cyt * cyto).astype(np.float32))
    layers.mark(frame, (frame.rho_cyto < 1.0) | (frame.rho < 1.0))
    return fill


def _plate(frame: CellFrame, width: float = 0.2) -> np.ndarray:
    """The metaphase plate of a mitotic cell: a bar across the nucleus (along v, at u ~ 0)."""
    return np.exp(-((frame.u / width) ** 2)) * np.clip((0.75 - np.abs(frame.v)) * 3.0, 0.0, 1.0)


def _spots_on_plate(cell: Cell, layers: Layers, rng: np.random.Generator, n: int, amp: float, sigma: float) -> None:
    u = rng.normal(0, 0.06, n)
    v = rng.uniform(-0.65, 0.65, n)
    ys, xs = to_image(cell, u, v)
    layers.add_spots(ys, xs, amp * rng.uniform(0.6, 1.0, n), sigma)


def _mitotic_body(frame: CellFrame, layers: Layers, glow: float) -> None:
    """A rounded mitotic cell: diffuse cytoplasmic glow over the whole cell, marked in the mask."""
    body = np.clip((1.15 - frame.rho) * 4.0, 0.0, 1.0)
    layers.paste(frame, (body * glow).astype(np.float32))
    layers.mark(frame, frame.rho < 1.15)


@RENDERERS.register("homogeneous")
def homogeneous(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """Even nuclear fill (slightly brighter rim); mitoses: a strongly stained chromatin plate."""
    if cell.mitotic:
        _mitotic_body(frame, layers, 0.08)
        layers.paste(frame, (0.9 * _plate(frame, 0.2)).astype(np.float32))
        _spots_on_plate(cell, layers, rng, 30, 0.45, 1.4)
        return
    rim = np.exp(-(((frame.rho - 0.88) / 0.12) ** 2)) * 0.12
    _base(frame, layers, 0.72 + 0.1 * variant + rim, 0.06)
    ys, xs = points_in_nucleus(cell, rng, 25)
    layers.add_spots(ys, xs, 0.05, 1.4)


@RENDERERS.register("speckled")
def speckled(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """Fine (variant < 0.5) or coarse grains over the nucleus, nucleoli spared; mitoses: speckled cytoplasm."""
    coarse = variant >= 0.5
    sigma, n = (1.4, 90) if coarse else (0.9, 260)
    if cell.mitotic:
        _mitotic_body(frame, layers, 0.22)
        ys, xs = points_in_nucleus(cell, rng, n // 2, r_max=1.1, r_min=0.3)
        layers.add_spots(ys, xs, 0.35 * rng.uniform(0.5, 1, n // 2), sigma)
        return
    _base(frame, layers, 0.25, 0.05)
    ys, xs = points_in_nucleus(cell, rng, n, r_max=0.95)
    layers.add_spots(ys, xs, (0.55 if coarse else 0.45) * rng.uniform(0.4, 1.0, n), sigma)
    holes = int(rng.integers(2, 5))  # nucleoli are spared: dark holes over fill and grains
    ys, xs = points_in_nucleus(cell, rng, holes, r_max=0.5)
    layers.add_holes(ys, xs, 0.85)


@RENDERERS.register("nucleolar")
def nucleolar(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """A few bright clumps (nucleoli) on a faint nucleus; mitoses: faint diffuse body."""
    if cell.mitotic:
        _mitotic_body(frame, layers, 0.15)
        return
    _base(frame, layers, 0.1 + 0.08 * variant, 0.04)
    n = int(rng.integers(2, 7))
    ys, xs = points_in_nucleus(cell, rng, n, r_max=0.6)
    layers.add_spots(ys, xs, 0.9 * rng.uniform(0.7, 1.0, n), 3.2 if variant > 0.5 else 2.2)
    ys, xs = points_in_nucleus(cell, rng, 3 * n, r_max=0.6)
    layers.add_spots(ys, xs, 0.35 * rng.uniform(0.5, 1.0, 3 * n), 1.4)


@RENDERERS.register("centromere")
def centromere(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """Dozens of discrete bright dots over the nucleus; mitoses: dots lined up on the plate."""
    n = int(rng.integers(35, 50) + 25 * variant)
    if cell.mitotic:
        _mitotic_body(frame, layers, 0.06)
        _spots_on_plate(cell, layers, rng, n, 0.9, 0.9)
        return
    _base(frame, layers, 0.07, 0.04)
    ys, xs = points_in_nucleus(cell, rng, n, r_max=0.9)
    layers.add_spots(ys, xs, 0.95 * rng.uniform(0.5, 1.0, n), 0.9)


@RENDERERS.register("golgi")
def golgi(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """A granular perinuclear crescent in the cytoplasm on one side of the nucleus."""
    if cell.mitotic:
        _mitotic_body(frame, layers, 0.12)
        return
    c0, s0 = np.cos(cell.phase), np.sin(cell.phase)
    cos_phi, sin_phi = frame.direction()
    toward = cos_phi * np.float32(c0) + sin_phi * np.float32(s0)
    width = 0.22 + 0.1 * variant
    crescent = np.exp(3.0 * (toward - 1.0)) * np.exp(-(((frame.rho - 1.2) / width) ** 2))
    fill = nucleus_fill(frame)
    staining = 0.55 * crescent * (1 - fill) + 0.08 * fill + 0.05 * cytoplasm_fill(frame, fill)
    layers.paste(frame, staining.astype(np.float32))
    layers.mark(frame, (frame.rho_cyto < 1.0) | (frame.rho < 1.0))
    n = 30
    ang = cell.phase + rng.normal(0, 0.55, n)
    rad = 1.2 + rng.normal(0, width / 2, n)
    dy = rad * np.sin(ang) * cell.a
    dx = rad * np.cos(ang) * cell.a
    layers.add_spots(cell.cy + dy, cell.cx + dx, 0.6 * rng.uniform(0.4, 1.0, n), 1.4)


@RENDERERS.register("numem")
def numem(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """A bright, smooth or punctate nuclear rim on a faint interior; mitoses: faint body."""
    if cell.mitotic:
        _mitotic_body(frame, layers, 0.14)
        return
    ring = np.exp(-(((frame.rho - 0.93) / (0.07 + 0.04 * variant)) ** 2))
    _base(frame, layers, 0.14 + 0.75 * ring, 0.04)
    n = 50
    ys, xs = points_in_nucleus(cell, rng, n, r_max=0.97, r_min=0.88)
    layers.add_spots(ys, xs, 0.3 * rng.uniform(0.3, 1.0, n), 1.4)


@RENDERERS.register("mitsp")
def mitsp(cell: Cell, frame: CellFrame, layers: Layers, rng: np.random.Generator, variant: float) -> None:
    """Interphase nuclei faint and finely speckled; mitotic cells show a bright bipolar spindle."""
    if not cell.mitotic:
        _base(frame, layers, 0.1 + 0.06 * variant, 0.05)
        ys, xs = points_in_nucleus(cell, rng, 40)
        layers.add_spots(ys, xs, 0.12, 0.9)
        return
    _mitotic_body(frame, layers, 0.1)
    spindle = np.clip((0.38 * (1 - np.abs(frame.u) / 0.85) - np.abs(frame.v)) * 8.0, 0.0, 1.0)
    fibres = 0.7 + 0.3 * np.cos(frame.v * 40.0) ** 2
    layers.paste(frame, (0.85 * spindle * fibres * (1 - 0.6 * _plate(frame, 0.12))).astype(np.float32))
    ys, xs = to_image(cell, np.array([-0.85, 0.85]), np.zeros(2))
    layers.add_spots(ys, xs, 1.0, 3.2)


def renderer(pattern: int | str) -> Renderer:
    """The renderer of a pattern index or name."""
    return RENDERERS.get(PATTERNS[pattern] if isinstance(pattern, int) else pattern)


assert set(RENDERERS.names()) == set(PATTERNS), "every pattern needs a renderer"
