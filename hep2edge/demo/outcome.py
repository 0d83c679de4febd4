"""The demo's verdicts against the truth: per image, per specimen, and the image-level figures.

Truth comes from the fresh dataset's manifest, masks and instance labels (`{stem}_Labels.tif`); predictions from
what the runtime wrote (`<stem>.json` with its `cells`, `<stem>_mask.png`, `<stem>_instances.png`, results.db).
Metrics are hep2edge.metrics, as everywhere else.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.data.manifest import load_dataset
from hep2edge.imageio import read_labels, read_mask
from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.metrics import accuracy, aji, confusion_matrix, dice, mean_class_accuracy
from hep2edge.runtime.specimens import cell_shares


@dataclass(frozen=True)
class ImageOutcome:
    """One fresh field: truth, verdict, mask Dice, cells and timings (ms)."""

    name: str
    patient: str
    true_pattern: str
    pattern: str
    pattern_probability: float
    true_intensity: str
    intensity: str
    dice: float
    analyse_ms: float  # pipeline: picked up -> result written
    landed_to_result_ms: float | None  # scanner's rename -> result JSON on disk
    overlay: Path | None
    cells: int | None = None  # the result JSON's cells.count; None: the run found no cells
    cell_method: str | None = None  # distance (watershed on the distance head) | components
    cell_patterns: dict[str, int] = field(default_factory=dict)  # cells per pattern (the pattern-map head)
    true_cells: int | None = None  # cells in the truth's {stem}_Labels.tif
    aji: float | None = None  # <stem>_instances.png against the truth's labels


@dataclass
class Outcome:
    images: list[ImageOutcome]
    specimens: list[dict[str, Any]] = field(default_factory=list)  # specimen, truth and verdict
    missing: list[str] = field(default_factory=list)  # fresh images without a result

    def figures(self) -> dict[str, float]:
        """Image-level pattern accuracy / mean class accuracy, intensity accuracy, mean Dice; specimen accuracy;
        where cells were found, cells per field (found and true), their relative count error and the mean AJI."""
        if not self.images:
            return {}
        truth = np.array([PATTERNS.index(i.true_pattern) for i in self.images])
        pred = np.array([PATTERNS.index(i.pattern) for i in self.images])
        figures = {
            "pattern_accuracy": accuracy(truth, pred),
            "pattern_mca": mean_class_accuracy(truth, pred, len(PATTERNS)),
            "intensity_accuracy": float(np.mean([i.true_intensity == i.intensity for i in self.images])),
            "dice": float(np.mean([i.dice for i in self.images])),
        }
        if self.specimens:
            figures["specimen_pattern_accuracy"] = float(np.mean([s["pattern"] == s["true_pattern"]
                                                                  for s in self.specimens]))
        counts = [(i.cells, i.true_cells) for i in self.images if i.cells is not None]
        if counts:
            figures["cells_per_field"] = float(np.mean([found for found, _ in counts]))
        labelled = [(found, true) for found, true in counts if true is not None]
        if labelled:
            figures["true_cells_per_field"] = float(np.mean([true for _, true in labelled]))
            figures["cell_count_error"] = float(np.mean([abs(found - true) / max(true, 1) for found, true in labelled]))
        scored = [i.aji for i in self.images if i.aji is not None]
        if scored:
            figures["aji"] = float(np.mean(scored))
        return figures

    def confusion(self) -> np.ndarray:
        truth = np.array([PATTERNS.index(i.true_pattern) for i in self.images], dtype=np.int64)
        pred = np.array([PATTERNS.index(i.pattern) for i in self.images], dtype=np.int64)
        return confusion_matrix(truth, pred, len(PATTERNS))


def _results_by_source(results: Path) -> dict[str, str]:
    """Source file name -> result stem, from results.db."""
    with sqlite3.connect(results / "results.db") as db:
        rows = db.execute("SELECT source_path, stem FROM results").fetchall()
    return {Path(source).name: stem for source, stem in rows}


def _most_cells(results: Path) -> dict[str, str]:
    """Specimen -> the pattern most of its cells carry (what `--specimen-method cells` gives), where known."""
    with sqlite3.connect(results / "results.db") as db:
        rows = db.execute("SELECT specimen, cell_patterns FROM results").fetchall()
    by_specimen: dict[str, list[str | None]] = {}
    for specimen, counts in rows:
        by_specimen.setdefault(specimen, []).append(counts)
    shares = {specimen: cell_shares(counts) for specimen, counts in by_specimen.items()}
    return {specimen: PATTERNS[int(np.argmax(s))] for specimen, s in shares.items() if s is not None}


def _specimens(results: Path, truth: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    with sqlite3.connect(results / "results.db") as db:
        rows = db.execute("SELECT specimen, images, complete, pattern, intensity FROM specimens "
                          "ORDER BY specimen").fetchall()
    most_cells = _most_cells(results)
    return [{"specimen": s, "images": n, "complete": bool(c), "pattern": p, "intensity": i,
             "most_cells": most_cells.get(s),
             "true_pattern": truth.get(s, ("?", "?"))[0], "true_intensity": truth.get(s, ("?", "?"))[1]}
            for s, n, c, p, i in rows]


def _cells(record: Any, results: Path, stem: str, document: dict[str, Any]) -> dict[str, Any]:
    """The ImageOutcome fields about cells: what the result JSON says, the truth's count, AJI where both exist."""
    truth = read_labels(record.labels) if record.labels is not None and record.labels.is_file() else None
    found: dict[str, Any] = {"true_cells": None if truth is None else len(np.unique(truth[truth > 0]))}
    section = document.get("cells")
    if section is None:
        return found
    found.update(cells=int(section["count"]), cell_method=section.get("method"),
                 cell_patterns={name: int(n) for name, n in section.get("patterns", {}).items() if n})
    instances = results / f"{stem}_instances.png"
    if truth is not None and instances.is_file():
        found["aji"] = aji(truth, read_labels(instances, truth.shape))
    return found


def _image(record: Any, results: Path, stem: str, landed: dict[str, float]) -> ImageOutcome:
    json_path = results / f"{stem}.json"
    document = json.loads(json_path.read_text(encoding="utf-8"))
    predicted = read_mask(results / f"{stem}_mask.png") > 0
    true_mask = read_mask(record.mask) > 0 if record.mask is not None else np.zeros_like(predicted)
    landed_at = landed.get(record.image.name)
    overlay = results / f"{stem}_overlay.png"
    return ImageOutcome(
        name=record.image.name, patient=record.patient,
        true_pattern=PATTERNS[record.pattern], pattern=document["pattern"]["top"],
        pattern_probability=float(document["pattern"]["probability"]),
        true_intensity=INTENSITIES[record.intensity], intensity=document["intensity"]["class"],
        dice=dice(predicted, true_mask), analyse_ms=float(document["timings_ms"].get("total", float("nan"))),
        landed_to_result_ms=None if landed_at is None else (json_path.stat().st_mtime - landed_at) * 1000,
        overlay=overlay if overlay.is_file() else None, **_cells(record, results, stem, document),
    )


def collect_outcome(fresh: Path, results: Path, landed: dict[str, float]) -> Outcome:
    """Join the fresh dataset's truth with the runtime's results."""
    records = load_dataset(fresh).records
    by_source = _results_by_source(results)
    images, missing = [], []
    for record in records:
        stem = by_source.get(record.image.name)
        if stem is None:
            missing.append(record.image.name)
            continue
        images.append(_image(record, results, stem, landed))
    truth = {r.patient: (PATTERNS[r.pattern], INTENSITIES[r.intensity]) for r in records}
    return Outcome(images, _specimens(results, truth), missing)
