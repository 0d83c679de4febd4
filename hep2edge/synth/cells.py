"""Cell layout and per-cell local coordinates for synthetic HEp-2 fields.

A cell is an irregular elliptical nucleus (diameter ~40-70 px) inside a larger, dimmer cytoplasm.
Cells sit on a jittered hexagonal lattice thinned by a smooth density field, so they touch in clumps
and leave gaps elsewhere. Each cell is rendered in a small local patch (`CellFrame`) and pasted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUCLEUS_DIAMETER = (40.0, 70.0)


@dataclass(frozen=True)
class Cell:
    """Geometry of one cell; lengths in pixels, angles in radians."""

    cy: float  # nucleus centre
    cx: float
    a: float  # nucleus semi-axes (a >= b)
    b: float
    theta: float
    harmonics: tuple[float, float, float, float]  # shape wobble: c2, phase2, c3, phase3
    cyto_scale: float  # cytoplasm radius / nucleus radius
    cyto_dy: float  # cytoplasm centre offset from the nucleus centre
    cyto_dx: float
    brightness: float  # cell-to-cell staining variation
    mitotic: bool
    phase: float  # a free angle used by renderers (golgi side, spindle axis, ...)

    @property
    def radius(self) -> float:
        """Radius of the patch that holds the whole cell."""
        return self.a * self.cyto_scale * 1.2 + max(abs(self.cyto_dy), abs(self.cyto_dx)) + 3.0


@dataclass
class CellFrame:
    """Local coordinates of one cell on its (clipped) patch `field[ys, xs]`.

    `rho` is the nucleus radius-normalised distance (1.0 on the nuclear rim, shape wobble included);
    `rho_cyto` the same for the cytoplasm; `u`, `v` the nucleus axes coordinates in units of `a`;
    `cos_phi`, `sin_phi` the direction from the nucleus centre.
    """

    ys: slice
    xs: slice
    rho: np.ndarray
    rho_cyto: np.ndarray
    u: np.ndarray
    v: np.ndarray
    cos_phi: np.ndarray
    sin_phi: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.rho.shape  # type: ignore[return-value]


def cell_frame(cell: Cell, height: int, width: int) -> CellFrame | None:
    """The local frame of `cell` clipped to the image; None if the cell lies outside it."""
    r = cell.radius
    y0, y1 = max(0, int(cell.cy - r)), min(height, int(cell.cy + r) + 1)
    x0, x1 = max(0, int(cell.cx - r)), min(width, int(cell.cx + r) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cell.cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cell.cx))[None, :]
    ct, st = np.float32(np.cos(cell.theta)), np.float32(np.sin(cell.theta))
    u = (dx * ct + dy * st) / np.float32(cell.a)
    v = (dy * ct - dx * st) / np.float32(cell.a)
    ratio = np.float32(cell.a / cell.b)
    r_ell = np.sqrt(u * u + (v * ratio) ** 2) + np.float32(1e-6)
    cu, su = u / r_ell, v * ratio / r_ell  # cos, sin of the elliptic angle
    c2, p2, c3, p3 = cell.harmonics
    cos2, sin2 = cu * cu - su * su, 2 * cu * su
    cos3, sin3 = cu * (4 * cu * cu - 3), su * (3 - 4 * su * su)
    wobble = c2 * (cos2 * np.cos(p2) - sin2 * np.sin(p2)) + c3 * (cos3 * np.cos(p3) - sin3 * np.sin(p3))
    rho = r_ell * (1 + wobble.astype(np.float32))
    # cytoplasm: a wider, less elongated and more irregular ellipse, offset from the nucleus
    off_u = np.float32((cell.cyto_dx * ct + cell.cyto_dy * st) / cell.a)
    off_v = np.float32((cell.cyto_dy * ct - cell.cyto_dx * st) / cell.a)
    ratio_c = np.float32(ratio**0.6)
    uc, vc = u - off_u, (v - off_v) * ratio_c
    rho_cyto = np.sqrt(uc * uc + vc * vc) / np.float32(cell.cyto_scale) * (1 + 1.5 * wobble.astype(np.float32))
    dist = np.sqrt(dy * dy + dx * dx) + np.float32(1e-6)
    return CellFrame(slice(y0, y1), slice(x0, x1), rho, rho_cyto, u, v, dx / dist, dy / dist)


def _density(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, scale: float) -> np.ndarray:
    """A smooth random field in [0, 1] made of a few cosines (clumps and gaps of cells)."""
    total = np.zeros_like(ys, dtype=np.float64)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(0.5, 1.5) / scale
        total += np.cos(2 * np.pi * freq * (xs * np.cos(angle) + ys * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    return (total / 3 + 1) / 2


def layout_cells(
    rng: np.random.Generator,
    height: int,
    width: int,
    mean_diameter: float = 55.0,
    occupancy: float = 0.75,
    mitotic_fraction: float = 0.03,
) -> list[Cell]:
    """Cells for one field: jittered hexagonal lattice thinned to about `occupancy` of its sites."""
    spacing = mean_diameter * rng.uniform(1.45, 1.7)
    rows = np.arange(-0.5, height / (spacing * 0.866) + 1)
    sites = [(j * spacing * 0.866, i * spacing + (j % 2) * spacing / 2)
             for j in rows for i in np.arange(-0.5, width / spacing + 1)]
    pos = np.asarray(sites, dtype=np.float64) + rng.normal(0, 0.18 * spacing, (len(sites), 2))
    keep_p = np.clip(occupancy + 0.6 * (_density(rng, pos[:, 0], pos[:, 1], max(height, width)) - 0.5), 0.1, 1)
    pos = pos[rng.random(len(pos)) < keep_p]
    cells: list[Cell] = []
    lo, hi = NUCLEUS_DIAMETER
    for cy, cx in pos:
        diameter = float(np.clip(rng.normal(mean_diameter, 6.0), lo, hi))
        a = diameter / 2 * rng.uniform(1.0, 1.12)
        mitotic = bool(rng.random() < mitotic_fraction)
        b = a * (rng.uniform(0.85, 1.0) if mitotic else rng.uniform(0.68, 0.97))
        cells.append(Cell(
            cy=float(cy), cx=float(cx), a=a, b=b, theta=rng.uniform(0, np.pi),
            harmonics=(rng.uniform(0, 0.06), rng.uniform(0, 2 * np.pi),
                       rng.uniform(0, 0.05), rng.uniform(0, 2 * np.pi)),
            cyto_scale=rng.uniform(1.3, 1.65), cyto_dy=rng.normal(0, 0.12 * a), cyto_dx=rng.normal(0, 0.12 * a),
            brightness=float(np.clip(rng.lognormal(0, 0.22), 0.5, 1.8)), mitotic=mitotic,
            phase=rng.uniform(0, 2 * np.pi),
        ))
    return cells
