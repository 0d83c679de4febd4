"""Specimen verdicts: images grouped by specimen (I3A `NNNNN_pK` -> `NNNNN`) and combined by vote or mean.

A specimen's verdict is written (results.db `specimens`, then specimens.csv) when its group reaches the
expected number of images, and for every group at the end of a one-shot run (marked incomplete if short).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np

from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.runtime.journal import Journal
from hep2edge.runtime.settings import SpecimenConfig


def cell_shares(cell_patterns: list[str | None]) -> np.ndarray | None:
    """Per pattern, the share of the cells of the images (their `cell_patterns` JSON) that carry it; None when no
    image has per-cell patterns or no cell was found."""
    counts = np.zeros(len(PATTERNS), dtype=np.float64)
    for text in cell_patterns:
        if text:
            found = json.loads(text)
            counts += [found.get(name, 0) for name in PATTERNS]
    return counts / counts.sum() if counts.sum() else None


def specimen_verdict(rows: list[tuple[str, str, list[float], float]], method: str,
                     shares: np.ndarray | None = None) -> dict[str, object]:
    """rows of (pattern, intensity, 7 pattern probabilities, P(positive) as stored) -> the specimen verdict.

    `cells` takes the pattern with the largest share of cells (`shares`); without per-cell patterns it votes."""
    probabilities = np.array([r[2] for r in rows], dtype=np.float64)
    positive = np.array([r[3] for r in rows], dtype=np.float64)
    mean = probabilities.mean(axis=0)
    if method == "cells" and shares is not None:
        verdict = specimen_verdict(rows, "vote")
        best = int(np.argmax(shares))
        return {**verdict, "pattern": PATTERNS[best], "pattern_probability": round(float(shares[best]), 6)}
    if method == "mean":
        best = int(np.argmax(mean))
        p_positive = float(positive.mean())
        intensity = INTENSITIES[int(p_positive >= 0.5)]
    else:
        votes = Counter(r[0] for r in rows)
        top = max(votes.values())
        best = max((PATTERNS.index(p) for p, n in votes.items() if n == top), key=lambda i: mean[i])
        intensity_votes = Counter(r[1] for r in rows)
        intensity = max(intensity_votes, key=lambda name: (intensity_votes[name], name == "positive"))
        p_positive = float(positive.mean())
    return {
        "pattern": PATTERNS[best],
        "pattern_probability": round(float(mean[best]), 6),
        "intensity": intensity,
        "intensity_probability": round(p_positive if intensity == "positive" else 1 - p_positive, 6),
    }


def update_specimen(journal: Journal, config: SpecimenConfig, specimen: str, final: bool = False) -> bool:
    """Write the specimen's verdict if its group is complete (or `final`); returns whether it was written."""
    if not specimen:
        return False
    columns = ", ".join(f"p_{name}" for name in PATTERNS)
    # one writer thread at a time from the read to the write: else a verdict from fewer images, computed
    # before another writer's commit, could overwrite the newer one
    with journal.exclusive():
        found = journal.query(
            f"SELECT pattern, intensity, {columns}, intensity_probability, cell_patterns FROM results "
            "WHERE specimen = ?", (specimen,),
        )
        if not found or (len(found) < config.images and not final):
            return False
        rows = []
        for row in found:
            probs = [float(v) for v in row[2:9]]
            p_positive = float(row[9]) if row[1] == "positive" else 1 - float(row[9])
            rows.append((str(row[0]), str(row[1]), probs, p_positive))
        verdict = specimen_verdict(rows, config.method, cell_shares([row[10] for row in found]))
        journal.write_specimen({
            "specimen": specimen, "images": len(rows), "complete": int(len(rows) >= config.images), **verdict,
            "method": config.method, "updated": time.time(),
        })
    return True


def all_specimens(journal: Journal) -> list[str]:
    return [r[0] for r in journal.query("SELECT DISTINCT specimen FROM results WHERE specimen != ''")]
