"""From per-tile model outputs to one image's verdict: the result JSON document and its database row.

Image level = the mean of its tiles' probabilities (the same aggregation hep2edge.metrics scores).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hep2edge import __version__
from hep2edge.contract import ModelContract
from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.tiling import TileGrid

RESULT_FORMAT = "hep2edge-result"


@dataclass(frozen=True)
class ModelInfo:
    """Who produced a result: shown in every JSON and row."""

    model_id: str
    precision: str
    backend: str
    file: str
    device: str
    inference: str = "tiles"  # tiles | field


@dataclass
class TileOutputs:
    """One image's model outputs: (N, t, t) uint8 0/1 tile masks, (N, 7) pattern and (N,) P(positive) per tile.

    A whole-field pass gives the (H, W) uint8 0/1 `field_mask` instead of tile masks. `dense`: the per-cell heads
    (distance, pattern_map) the model has, as uint8 probabilities.
    """

    mask: np.ndarray | None
    pattern: np.ndarray
    intensity: np.ndarray
    field_mask: np.ndarray | None = None
    dense: dict[str, np.ndarray] = field(default_factory=dict)  # uint8 maps: (N, C, t, t) tiles or (C, H, W) field


@dataclass
class ImageFacts:
    """What the pipeline knows about one input besides the model outputs."""

    source: str
    content_hash: str
    stem: str
    specimen: str
    height: int
    width: int
    dtype: str
    timings_ms: dict[str, float] = field(default_factory=dict)


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


def tile_records(outputs: TileOutputs, grid: TileGrid, foreground: np.ndarray) -> list[dict[str, Any]]:
    records = []
    for index, (top, left) in enumerate(grid.positions):
        probs = outputs.pattern[index]
        best = int(np.argmax(probs))
        records.append({
            "index": index, "top": top, "left": left,
            "pattern": PATTERNS[best], "pattern_probability": _round(probs[best]),
            "intensity_positive_probability": _round(outputs.intensity[index]),
            "foreground_fraction": _round(foreground[index]),
        })
    return records


def image_result(
    facts: ImageFacts, outputs: TileOutputs, grid: TileGrid, mask: np.ndarray, foreground: np.ndarray,
    model: ModelInfo, contract: ModelContract, cells: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `<stem>.json` document of one image; `mask` is the stitched (H, W) uint8 0/255 mask; `cells` the
    per-cell section (runtime/cells.py) where cells were analysed."""
    pattern = outputs.pattern.mean(axis=0)
    best = int(np.argmax(pattern))
    positive = float(outputs.intensity.mean())
    intensity = int(positive >= 0.5)
    return {
        "format": RESULT_FORMAT,
        "source": facts.source,
        "content_hash": facts.content_hash,
        "stem": facts.stem,
        "specimen": facts.specimen,
        "image": {"height": facts.height, "width": facts.width, "dtype": facts.dtype},
        "pattern": {"top": PATTERNS[best], "probability": _round(pattern[best]),
                    "probabilities": {name: _round(p) for name, p in zip(PATTERNS, pattern)}},
        "intensity": {"class": INTENSITIES[intensity], "probability": _round(positive if intensity else 1 - positive),
                      "positive_probability": _round(positive)},
        "foreground_fraction": _round(float(np.count_nonzero(mask)) / mask.size),
        "mask_threshold": contract.mask_threshold,
        "tile": grid.tile,
        "tiles": tile_records(outputs, grid, foreground),
        **({"cells": cells} if cells is not None else {}),
        "model": {"id": model.model_id, "precision": model.precision, "backend": model.backend,
                  "file": model.file, "device": model.device, "inference": model.inference},
        "timings_ms": {k: _round(v, 3) for k, v in facts.timings_ms.items()},
        "analysed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hep2edge_version": __version__,
    }


def result_row(result: dict[str, Any]) -> dict[str, Any]:
    """The `results` table / results.csv row of a result document."""
    probabilities = result["pattern"]["probabilities"]
    return {
        "content_hash": result["content_hash"],
        "stem": result["stem"],
        "source_path": result["source"],
        "specimen": result["specimen"],
        "pattern": result["pattern"]["top"],
        "pattern_probability": result["pattern"]["probability"],
        "intensity": result["intensity"]["class"],
        "intensity_probability": result["intensity"]["probability"],
        "foreground_fraction": result["foreground_fraction"],
        **{f"p_{name}": probabilities[name] for name in PATTERNS},
        "tiles": len(result["tiles"]),
        "cell_count": result["cells"]["count"] if "cells" in result else None,
        "cell_patterns": json.dumps(result["cells"]["patterns"]) if "patterns" in result.get("cells", {}) else None,
        "model_id": result["model"]["id"],
        "precision": result["model"]["precision"],
        "backend": result["model"]["backend"],
        "total_ms": result["timings_ms"].get("total"),
        "analysed_at": result["analysed_at"],
    }
