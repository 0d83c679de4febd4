"""The worklist: every specimen in results.db with the model's verdict, its newest review and its flags.

A specimen is a group of images (`specimen` column of `results`, I3A `NNNNN_pK` -> `NNNNN`); its model
verdict is the `specimens` row the watcher writes once the group is complete (or at the end of `analyze`).
A group still waiting for images has no verdict yet. An image whose name gave no specimen is listed on its
own, under its stem, with the image's verdict.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Any

from hep2edge.labels import PATTERNS
from hep2edge.review.verdicts import Review, Verdict, latest_reviews

STATUSES = ("new", "confirmed", "corrected")
SORTS = ("newest", "confidence")
LOW_CONFIDENCE = 0.5  # a model verdict whose pattern probability is below this is flagged
IMAGE_COLUMNS = ("stem, source_path, specimen, pattern, pattern_probability, intensity, intensity_probability, "
                 f"model_id, analysed_at, tiles, content_hash, {', '.join(f'p_{name}' for name in PATTERNS)}")


@dataclass(frozen=True)
class ImageRow:
    """One analysed field of a specimen (a `results` row)."""

    stem: str
    source_path: str
    specimen: str
    verdict: Verdict
    pattern_probability: float
    intensity_probability: float
    model_id: str
    analysed_at: float
    tiles: int
    content_hash: str
    probabilities: dict[str, float]

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ImageRow:
        return cls(str(row[0]), str(row[1]), str(row[2] or ""), Verdict((str(row[3]),), str(row[5])),
                   float(row[4]), float(row[6]), str(row[7] or ""), _epoch(row[8]), int(row[9] or 0),
                   str(row[10] or ""), {name: float(p or 0.0) for name, p in zip(PATTERNS, row[11:])})


@dataclass(frozen=True)
class Entry:
    """One worklist line: a specimen (or a lone image), its model verdict and its newest review."""

    key: str
    images: int
    complete: bool
    model: Verdict | None
    pattern_probability: float | None
    intensity_probability: float | None
    verdict_at: float | None
    arrived: float
    model_id: str
    review: Review | None

    @property
    def final(self) -> Verdict | None:
        """The result that counts: the newest review's, else the model's."""
        return self.review.after if self.review is not None else self.model

    @property
    def status(self) -> str:
        """new (no review), confirmed (the review agrees with the model) or corrected."""
        if self.review is None:
            return "new"
        return "confirmed" if self.review.after == self.model else "corrected"

    def flags(self, low_confidence: float = LOW_CONFIDENCE) -> list[str]:
        """Why a reviewer should look twice, most important first."""
        flags = []
        if self.pattern_probability is not None and self.pattern_probability < low_confidence:
            flags.append("low confidence")
        if not self.complete:
            flags.append("incomplete")
        if self.review is not None and (self.verdict_at or 0) > (self.review.verdict_at or 0) + 1e-6:
            flags.append("re-analysed after review")
        return flags


def _epoch(value: Any) -> float:
    """An ISO time (results.analysed_at) or epoch seconds -> epoch seconds (0 when unknown)."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _entries(db: sqlite3.Connection, where: str = "", parameters: tuple[Any, ...] = ()) -> list[Entry]:
    images = [ImageRow.from_row(row) for row in db.execute(f"SELECT {IMAGE_COLUMNS} FROM results {where}", parameters)]
    groups: dict[str, list[ImageRow]] = {}
    for image in images:
        groups.setdefault(image.specimen or image.stem, []).append(image)
    verdicts = {row[0]: row for row in db.execute(
        "SELECT specimen, images, complete, pattern, pattern_probability, intensity, intensity_probability, updated "
        "FROM specimens")}
    reviews = latest_reviews(db)
    return [_entry(key, group, verdicts.get(key) if group[0].specimen else None, reviews.get(key))
            for key, group in groups.items()]


def _entry(key: str, group: list[ImageRow], row: tuple[Any, ...] | None, review: Review | None) -> Entry:
    arrived = max(image.analysed_at for image in group)
    model_id = ",".join(sorted({image.model_id for image in group if image.model_id}))
    if not group[0].specimen:  # a lone image: its own verdict
        image = group[0]
        return Entry(key, 1, True, image.verdict, image.pattern_probability, image.intensity_probability,
                     image.analysed_at, arrived, model_id, review)
    if row is None:  # still waiting for images
        return Entry(key, len(group), False, None, None, None, None, arrived, model_id, review)
    return Entry(key, len(group), bool(row[2]), Verdict((str(row[3]),), str(row[5])), float(row[4]),
                 float(row[6]), float(row[7]), arrived, model_id, review)


def entries(db: sqlite3.Connection, status: str = "", pattern: str = "", sort: str = "newest") -> list[Entry]:
    """The worklist, newest first (or least confident first), filtered by status and by a final pattern."""
    found = _entries(db)
    if status:
        found = [e for e in found if e.status == status]
    if pattern:
        found = [e for e in found if e.final is not None and pattern in e.final.patterns]
    found.sort(key=lambda e: (e.arrived, e.key), reverse=True)
    if sort == "confidence":
        found.sort(key=lambda e: (e.pattern_probability is None, e.pattern_probability or 0.0))
    return found


def entry(db: sqlite3.Connection, key: str) -> Entry | None:
    """One worklist line by specimen id (or a lone image's stem), or None."""
    found = _entries(db, "WHERE specimen = ? OR (specimen = '' AND stem = ?)", (key, key))
    return next((e for e in found if e.key == key), None)


def images(db: sqlite3.Connection, key: str) -> list[ImageRow]:
    """The fields of a specimen (or the lone image `key`), in name order."""
    rows = db.execute(f"SELECT {IMAGE_COLUMNS} FROM results WHERE specimen = ? OR (specimen = '' AND stem = ?) "
                      "ORDER BY stem", (key, key))
    return [ImageRow.from_row(row) for row in rows]


def neighbours(keys: list[str], key: str) -> tuple[str | None, str | None]:
    """The keys before and after `key` in a worklist order (None at either end or when absent)."""
    if key not in keys:
        return None, None
    index = keys.index(key)
    return (keys[index - 1] if index > 0 else None), (keys[index + 1] if index + 1 < len(keys) else None)
