"""Per-image files: `<stem>_mask.png`, then `<stem>.json` (written last: its presence means complete), and
`<stem>_overlay.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hep2edge.atomic import atomic_write_bytes, atomic_write_json
from hep2edge.imageio import encode_mask_png, encode_png
from hep2edge.labels import PATTERNS
from hep2edge.runtime.cells import CellAnalysis
from hep2edge.runtime.sinks.base import ImageOutput, ImageSink

CONTOUR_RGB = (0, 255, 0)
TEXT_RGB = (255, 255, 0)
PATTERN_RGB = dict(zip(PATTERNS, [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                                  (145, 30, 180), (70, 240, 240)]))  # one distinct colour per ANA pattern


def result_json_path(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / f"{stem}.json"


def mask_path(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / f"{stem}_mask.png"


class JsonMaskSink(ImageSink):
    """The result document and the full-size stitched mask (0/255 PNG)."""

    name = "json"

    def files(self, stem: str) -> list[Path]:
        return [mask_path(self.results_dir, stem), result_json_path(self.results_dir, stem)]

    def write(self, output: ImageOutput) -> None:
        stem = output.result["stem"]
        atomic_write_bytes(mask_path(self.results_dir, stem), encode_mask_png(output.mask))
        atomic_write_json(result_json_path(self.results_dir, stem), output.result)


def read_complete_result(results_dir: Path, stem: str, content_hash: str) -> dict[str, Any] | None:
    """The result document of `stem` if it and its mask are complete and belong to `content_hash`, else None."""
    path = result_json_path(results_dir, stem)
    if not (path.is_file() and mask_path(results_dir, stem).is_file()):
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(result, dict) or result.get("content_hash") != content_hash:
        return None
    return result


def display_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8/uint16 -> (H, W, 3) uint8, contrast stretched to the 0.5-99.5 percentiles."""
    lo, hi = np.percentile(gray, (0.5, 99.5))
    scaled = np.clip((gray.astype(np.float32) - lo) / max(float(hi - lo), 1.0), 0, 1) * 255
    return np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=2)


def draw_cells(rgb: np.ndarray, cells: CellAnalysis, thickness: int) -> None:
    """Each cell's contour, coloured by its pattern (CONTOUR_RGB where the model gives none)."""
    for record in cells.records:
        top, left, bottom, right = record["bbox"]
        own = (cells.labels[top:bottom, left:right] == record["id"]).view(np.uint8)
        contours, _ = cv2.findContours(own, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(left, top))
        colour = PATTERN_RGB.get(record.get("pattern", ""), CONTOUR_RGB)
        cv2.drawContours(rgb, contours, -1, colour, thickness)


class OverlaySink(ImageSink):
    """`<stem>_overlay.png`: the image with the mask contours (each cell's, coloured by pattern, where cells were
    analysed) and the verdict written on it."""

    name = "overlay"

    def files(self, stem: str) -> list[Path]:
        return [Path(self.results_dir) / f"{stem}_overlay.png"]

    def write(self, output: ImageOutput) -> None:
        rgb = np.ascontiguousarray(display_rgb(output.gray))
        thickness = max(1, round(min(rgb.shape[:2]) / 400))
        if output.cells is not None:
            draw_cells(rgb, output.cells, thickness)
        else:
            contours, _ = cv2.findContours(output.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(rgb, contours, -1, CONTOUR_RGB, thickness)
        result = output.result
        lines = [
            f"{result['pattern']['top']} {result['pattern']['probability']:.2f}",
            f"{result['intensity']['class']} {result['intensity']['probability']:.2f}",
            f"foreground {result['foreground_fraction']:.1%}",
        ]
        if "cells" in result:
            lines.append(f"{result['cells']['count']} cells")
        scale = max(0.5, min(rgb.shape[:2]) / 900)
        for row, text in enumerate(lines):
            origin = (10, int(30 * scale * (row + 1)))
            cv2.putText(rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
            cv2.putText(rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_RGB, thickness, cv2.LINE_AA)
        atomic_write_bytes(self.files(result["stem"])[0], encode_png(rgb))


class InstanceLabelSink(ImageSink):
    """`<stem>_instances.png`: the 16-bit instance labels (0 background, 1..n the cells of `cells.items`)."""

    name = "instances"

    def files(self, stem: str) -> list[Path]:
        return [Path(self.results_dir) / f"{stem}_instances.png"]

    def write(self, output: ImageOutput) -> None:
        if output.cells is None:
            return
        labels = np.minimum(output.cells.labels, np.iinfo(np.uint16).max).astype(np.uint16)
        atomic_write_bytes(self.files(output.result["stem"])[0], encode_png(labels))
