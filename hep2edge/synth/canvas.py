"""The layers a synthetic field is drawn on: a diffuse layer, point-spread layers, the cell mask and cell ids."""

from __future__ import annotations

import cv2
import numpy as np

from hep2edge.synth.cells import Cell, CellFrame

SPOT_SIGMAS = (0.9, 1.4, 2.2, 3.2)
HOLE_SIGMA = 3.5


class Layers:
    """Full-field float32 layers; cells paste their patches and drop point impulses here.

    `ids` holds the instance id (`cell_id` when it marked) of the cell that owns each marked pixel: where cells
    overlap, the one the pixel lies deepest in (smallest radius-normalised distance, nucleus or cytoplasm; the
    earlier cell on a tie), so a nucleus is never given to a neighbour's cytoplasm. `ids > 0` is exactly `mask > 0`.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.diffuse = np.zeros((height, width), np.float32)
        self.spots = {s: np.zeros((height, width), np.float32) for s in SPOT_SIGMAS}
        self.holes = np.zeros((height, width), np.float32)
        self.mask = np.zeros((height, width), np.uint8)
        self.ids = np.zeros((height, width), np.int32)
        self.depth = np.full((height, width), np.inf, np.float32)  # the owner's radius-normalised distance
        self.gain = 1.0  # the current cell's brightness, applied to what it draws
        self.cell_id = 1  # the current cell's instance id, written where it marks the mask

    def paste(self, frame: CellFrame, patch: np.ndarray) -> None:
        """Maximum of the diffuse layer and a cell's patch (touching cells do not add up)."""
        region = self.diffuse[frame.ys, frame.xs]
        np.maximum(region, patch * np.float32(self.gain), out=region)

    def mark(self, frame: CellFrame, inside: np.ndarray) -> None:
        """Mark a cell's pixels as foreground in the mask, and as `cell_id` where it lies deeper than their owner."""
        self.mask[frame.ys, frame.xs] |= inside.astype(np.uint8)
        depth = np.minimum(frame.rho, frame.rho_cyto)
        ids, owner = self.ids[frame.ys, frame.xs], self.depth[frame.ys, frame.xs]
        owns = inside.astype(bool) & (depth < owner)
        ids[owns] = self.cell_id
        owner[owns] = depth[owns]

    def add_spots(self, ys: np.ndarray, xs: np.ndarray, amplitude: np.ndarray | float, sigma: float) -> None:
        """Gaussian spots of peak `amplitude` and width `sigma` (snapped to SPOT_SIGMAS) at (ys, xs)."""
        s = min(SPOT_SIGMAS, key=lambda k: abs(k - sigma))
        yi, xi = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
        keep = (yi >= 0) & (yi < self.height) & (xi >= 0) & (xi < self.width)
        amp = np.broadcast_to(np.asarray(amplitude, np.float32) * np.float32(self.gain), yi.shape)[keep]
        np.add.at(self.spots[s], (yi[keep], xi[keep]), amp * np.float32(2 * np.pi * s * s))

    def add_holes(self, ys: np.ndarray, xs: np.ndarray, depth: float, sigma: float = HOLE_SIGMA) -> None:
        """Gaussian dark spots (e.g. spared nucleoli) that attenuate everything by up to `depth`."""
        yi, xi = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
        keep = (yi >= 0) & (yi < self.height) & (xi >= 0) & (xi < self.width)
        np.add.at(self.holes, (yi[keep], xi[keep]), np.float32(depth * 2 * np.pi * sigma * sigma))

    def render(self) -> np.ndarray:
        """The field signal: diffuse layer plus every spot layer blurred by its sigma, attenuated by holes."""
        out = self.diffuse.copy()
        for s, layer in self.spots.items():
            if layer.any():
                out += cv2.GaussianBlur(layer, (0, 0), s)
        if self.holes.any():
            out *= 1 - np.clip(cv2.GaussianBlur(self.holes, (0, 0), HOLE_SIGMA), 0, 0.95)
        return out


def points_in_nucleus(
    cell: Cell, rng: np.random.Generator, n: int, r_max: float = 0.9, r_min: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """`n` points spread uniformly over the nucleus annulus r_min..r_max (radius-normalised): (ys, xs)."""
    r = np.sqrt(rng.uniform(r_min**2, r_max**2, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return to_image(cell, r * np.cos(phi), r * np.sin(phi) * cell.b / cell.a)


def to_image(cell: Cell, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus-axis coordinates (units of `a`) -> image (ys, xs)."""
    ct, st = np.cos(cell.theta), np.sin(cell.theta)
    xs = cell.cx + cell.a * (u * ct - v * st)
    ys = cell.cy + cell.a * (u * st + v * ct)
    return ys, xs
