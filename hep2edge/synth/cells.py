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
    `dy`, `dx` the (H, 1) and (1, W) offsets from the nucleus centre in pixels.
    """

    ys: slice
    xs: slice
    rho: np.ndarray
    rho_cyto: np.ndarray
    u: np.ndarray
    v: np.ndarray
    dy: np.ndarray
    dx: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.rho.shape  # type: ignore[return-value]

    def direction(self) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin) of the direction from the nucleus centre, per pixel."""
        inv = 1 / (np.sqrt(self.dy * self.dy + self.dx * self.dx) + np.float32(1e-6))
        return self.dx * inv, self.dy * inv


def _f32(*values: float) -> list[np.float32]:
    return [np.float32(v) for v in values]


def cell_frame(cell: Cell, height: int, width: int) -> CellFrame | None:
    """The local frame of `cell` clipped to the image; None if the cell lies outside it."""
    r = cell.radius
    y0, y1 = max(0, int(cell.cy - r)), min(height, int(cell.cy + r) + 1)
    x0, x1 = max(0, int(cell.cx - r)), min(width, int(cell.cx + r) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cell.cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cell.cx))[None, :]
    ct, st = np.cos(cell.theta) / cell.a, np.sin(cell.theta) / cell.a
    ratio = cell.a / cell.b
    c2, p2, c3, p3 = cell.harmonics
    ct32, st32, ratio32, one, two, three, four = _f32(ct, st, ratio, 1, 2, 3, 4)
    a2, b2, a3, b3 = _f32(c2 * np.cos(p2), c2 * np.sin(p2), c3 * np.cos(p3), c3 * np.sin(p3))
    u = dx * ct32 + dy * st32
    v = dy * ct32 - dx * st32
    vr = v * ratio32
    r_ell = np.sqrt(u * u + vr * vr) + np.float32(1e-6)
    inv = one / r_ell
    cu, su = u * inv, vr * inv  # cos, sin of the elliptic angle
    cu2, su2 = cu * cu, su * su
    wobble = a2 * (cu2 - su2) - two * b2 * cu * su + a3 * cu * (four * cu2 - three) - b3 * su * (three - four * su2)
    rho = r_ell * (one + wobble)
    # cytoplasm: a wider, less elongated and more irregular ellipse, offset from the nucleus
    off_u, off_v, ratio_c, inv_scale, k = _f32(
        cell.cyto_dx * ct + cell.cyto_dy * st, cell.cyto_dy * ct - cell.cyto_dx * st, ratio**0.6,
        1 / cell.cyto_scale, 1.5,
    )
    uc, vc = u - off_u, (v - off_v) * ratio_c
    rho_cyto = np.sqrt(uc * uc + vc * vc) * inv_scale * (one + k * wobble)
    return CellFrame(slice(y0, y1), slice(x0, x1), rho, rho_cyto, u, v, dy, dx)


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
    n = len(pos)
    lo, hi = NUCLEUS_DIAMETER
    a = np.clip(rng.normal(mean_diameter, 6.0, n), lo, hi) / 2 * rng.uniform(1.0, 1.12, n)
    mitotic = rng.random(n) < mitotic_fraction
    b = a * np.where(mitotic, rng.uniform(0.85, 1.0, n), rng.uniform(0.68, 0.97, n))
    theta, phase = rng.uniform(0, np.pi, n), rng.uniform(0, 2 * np.pi, n)
    harmonics = np.stack([rng.uniform(0, 0.06, n), rng.uniform(0, 2 * np.pi, n),
                          rng.uniform(0, 0.05, n), rng.uniform(0, 2 * np.pi, n)], axis=1)
    cyto_scale = rng.uniform(1.3, 1.65, n)
    cyto_offset = rng.normal(0, 0.12, (n, 2)) * a[:, None]
    brightness = np.clip(rng.lognormal(0, 0.22, n), 0.5, 1.8)
    return [
        Cell(cy=float(pos[i, 0]), cx=float(pos[i, 1]), a=float(a[i]), b=float(b[i]), theta=float(theta[i]),
             harmonics=tuple(float(h) for h in harmonics[i]),  # type: ignore[arg-type]
             cyto_scale=float(cyto_scale[i]), cyto_dy=float(cyto_offset[i, 0]), cyto_dx=float(cyto_offset[i, 1]),
             brightness=float(brightness[i]), mitotic=bool(mitotic[i]), phase=float(phase[i]))
        for i in range(n)
    ]
