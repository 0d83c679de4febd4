"""Whole-field inference, numpy reference: the field padded to a multiple of 32 goes through the network once.

The mask comes back whole (no overlap compute, no seams). Pattern and intensity keep their per-tile meaning:
the heads' logit maps (one value per 32 px cell) are averaged over each tile's region of the grid tile mode
would use, then activated; pooling is linear, so that is the head applied to features pooled over the region.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.normalization import normalize_tiles
from hep2edge.runtime.cells import to_u8
from hep2edge.runtime.results import TileOutputs
from hep2edge.runtime.settings import INFERENCE_MODES, check_choice
from hep2edge.tiling import TileGrid
from hep2edge.workspace import EXPORT_REPORT_JSON

MAX_FIELD_PIXELS = 4096 * 4096  # padded pixels of one whole-field pass; larger fields run in tiles


def check_inference_mode(mode: str, contract: ModelContract, source: str) -> None:
    """ConfigError for an unknown mode or `field` with a model exported before whole-field inference."""
    check_choice("inference", mode, INFERENCE_MODES)
    if mode == "field" and not contract.whole_field:
        raise ConfigError(f"`inference` field: {source} has no whole-field outputs (exported by an older "
                          "hep2edge); re-export it with `hep2edge export`, or use `inference` tiles")
    if mode == "field" and contract.normalization.mode != "fixed":
        raise ConfigError(f"`inference` field: {source} normalises each tile by its own range "
                          f"({contract.normalization.mode}), which a whole field cannot reproduce; "
                          "use `inference` tiles")


def export_field_warning(mode: str, model: Path) -> str | None:
    """A line to show when `field` is asked of a model whose export found whole fields outside its verification
    limits (the `whole_field` section of the export report beside it), else None."""
    report = model.parent / EXPORT_REPORT_JSON
    if mode != "field" or not report.is_file():
        return None
    try:
        verdict = json.loads(report.read_text()).get("whole_field") or {}
    except (OSError, ValueError, AttributeError):
        return None  # an unreadable report says nothing about the model
    if verdict.get("within_limits", True) or verdict.get("skipped"):
        return None
    failures = "; ".join(map(str, verdict.get("failures", [])))
    return (f"warning: {model.name}'s export found whole fields outside its verification limits ({failures}; "
            f"{report}); tile mode is the verified one")


def field_shape(height: int, width: int, stride: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of `stride`: the padded field the network sees."""
    return math.ceil(height / stride) * stride, math.ceil(width / stride) * stride


def field_problem(height: int, width: int, contract: ModelContract, largest: tuple[int, int] | None = None,
                  max_pixels: int = MAX_FIELD_PIXELS) -> str | None:
    """Why a field runs in tiles instead (smaller than one tile, larger than the device's `largest` padded
    (H, W) or than `max_pixels` in one pass), or None."""
    if min(height, width) < contract.tile:
        return f"smaller than one {contract.tile} px tile"
    padded = field_shape(height, width, contract.field_stride)
    if largest is not None and (padded[0] > largest[0] or padded[1] > largest[1]):
        return (f"padded to {padded[1]} x {padded[0]}, larger than the {largest[1]} x {largest[0]} field the "
                "engine's whole-field profile takes (rebuild it with --field-size)")
    if padded[0] * padded[1] > max_pixels:
        return f"{padded[1]} x {padded[0]} padded pixels exceed the whole-field limit of {max_pixels}"
    return None


def field_input(gray: np.ndarray, contract: ModelContract) -> np.ndarray:
    """(H, W) uint8/uint16 -> (1, 1, Hp, Wp) float32: zero-padded at the bottom/right as tiles are, normalised."""
    padded_h, padded_w = field_shape(gray.shape[0], gray.shape[1], contract.field_stride)
    padded = np.zeros((1, padded_h, padded_w), dtype=gray.dtype)
    padded[0, : gray.shape[0], : gray.shape[1]] = gray
    return normalize_tiles(padded, contract.normalization)


def tile_cells(grid: TileGrid, stride: int) -> list[tuple[slice, slice]]:
    """Per tile, the rows and columns of stride-px cells that cover its in-image part."""
    cells = []
    for index, (top, left) in enumerate(grid.positions):
        h, w = grid.valid_size(index)
        rows = slice(top // stride, max(top // stride + 1, math.ceil((top + h) / stride)))
        cols = slice(left // stride, max(left // stride + 1, math.ceil((left + w) / stride)))
        cells.append((rows, cols))
    return cells


def pool_tiles(logits: np.ndarray, grid: TileGrid, stride: int) -> np.ndarray:
    """(K, h, w) logit map -> (N, K): the mean over each tile's cells."""
    return np.stack([logits[:, rows, cols].mean(axis=(1, 2)) for rows, cols in tile_cells(grid, stride)])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def field_outputs(outputs: dict[str, np.ndarray], grid: TileGrid, contract: ModelContract) -> TileOutputs:
    """A whole-field pass ((1,1,Hp,Wp) mask probabilities, (1,K,h,w) logit maps) -> per-tile evidence + the mask."""
    probabilities = np.asarray(outputs["mask"][0, 0, : grid.height, : grid.width], dtype=np.float32)
    mask = (probabilities > np.float32(contract.mask_threshold)).astype(np.uint8)
    dense = {name: to_u8(outputs[name][0, :, : grid.height, : grid.width]) for name in contract.cell_outputs}
    return pooled_outputs(outputs, grid, contract, mask, dense)


def pooled_outputs(outputs: dict[str, np.ndarray], grid: TileGrid, contract: ModelContract, mask: np.ndarray,
                   dense: dict[str, np.ndarray]) -> TileOutputs:
    """Per-tile pattern / intensity pooled from the (1,K,h,w) logit maps, beside the (H, W) uint8 0/1 mask and
    the uint8 dense maps, made wherever the pass ran (host or device)."""
    pattern, intensity = pooled_evidence(outputs, grid, contract.field_stride)
    return TileOutputs(mask=None, pattern=pattern, intensity=intensity, field_mask=mask, dense=dense)


def pooled_evidence(outputs: dict[str, np.ndarray], grid: TileGrid, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) pattern probabilities and (N,) P(positive) per tile: the logit maps averaged over each tile's cells."""
    pattern = softmax(pool_tiles(outputs["pattern_logits"][0].astype(np.float64), grid, stride))
    intensity = sigmoid(pool_tiles(outputs["intensity_logits"][0].astype(np.float64), grid, stride))[:, 0]
    return pattern.astype(np.float32), intensity.astype(np.float32)


def field_verdict(outputs: dict[str, np.ndarray], height: int, width: int, stride: int) -> tuple[np.ndarray, float]:
    """The alternative pooling: pattern probabilities and P(positive) from the whole in-image field at once."""
    rows, cols = slice(0, math.ceil(height / stride)), slice(0, math.ceil(width / stride))
    pattern = softmax(outputs["pattern_logits"][0][:, rows, cols].astype(np.float64).mean(axis=(1, 2)))
    positive = float(sigmoid(outputs["intensity_logits"][0][:, rows, cols].astype(np.float64).mean()))
    return pattern, positive
