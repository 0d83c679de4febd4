"""What a specimen's result is: a Verdict (one or more patterns + an intensity), and the Reviews that set it.

A reviewer may name several patterns (mixed patterns are common); the first is the primary one, the one a
single-label training set keeps. Patterns are accepted by name (any case, `nuclear membrane` and `mitotic
spindle` too), never by number: the app's keys 1-7 and the training labels' 0-6 would disagree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hep2edge.errors import ConfigError
from hep2edge.labels import INTENSITIES, PATTERNS, LabelError, parse_intensity, parse_pattern
from hep2edge.review.db import has_table

ACTIONS = ("confirmed", "corrected")
REVIEW_COLUMNS = "id, specimen, based_on, reviewer, at, action, before, after, comment, model_id, verdict_at"
MAX_REVIEWER_CHARS = 80
MAX_COMMENT_CHARS = 2000


@dataclass(frozen=True)
class Verdict:
    """One or more patterns (primary first) and an intensity."""

    patterns: tuple[str, ...]
    intensity: str

    def to_json(self) -> str:
        return json.dumps({"patterns": list(self.patterns), "intensity": self.intensity})

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        data = json.loads(text)
        return cls(tuple(data["patterns"]), str(data["intensity"]))

    @property
    def pattern(self) -> str:
        """The primary pattern."""
        return self.patterns[0]

    def __str__(self) -> str:
        return f"{' + '.join(self.patterns)} / {self.intensity}"


@dataclass(frozen=True)
class Review:
    """One row of the `reviews` audit table."""

    id: int
    specimen: str
    based_on: int | None
    reviewer: str
    at: float
    action: str
    before: Verdict | None
    after: Verdict
    comment: str
    model_id: str
    verdict_at: float | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Review:
        before = Verdict.from_json(row[6]) if row[6] else None
        return cls(int(row[0]), str(row[1]), row[2], str(row[3]), float(row[4]), str(row[5]), before,
                   Verdict.from_json(row[7]), str(row[8]), str(row[9]), row[10])


def parse_patterns(values: Iterable[str]) -> tuple[str, ...]:
    """Pattern names -> canonical names in the order given, duplicates dropped; ConfigError for any other."""
    found: list[str] = []
    for value in values:
        text = str(value).strip()
        try:
            if text.isdigit():
                raise LabelError(text)
            name = PATTERNS[parse_pattern(text)]
        except LabelError:
            raise ConfigError(f"unknown pattern {text!r} (expected one of {', '.join(PATTERNS)})") from None
        if name not in found:
            found.append(name)
    if not found:
        raise ConfigError("a correction names at least one pattern")
    return tuple(found)


def parse_intensity_name(value: str) -> str:
    """An intensity name -> its canonical name; ConfigError for any other (numbers included)."""
    text = str(value).strip()
    try:
        if text.isdigit():
            raise LabelError(text)
        return INTENSITIES[parse_intensity(text)]
    except LabelError:
        raise ConfigError(f"unknown intensity {text!r} (expected one of {', '.join(INTENSITIES)})") from None


def check_reviewer(name: str) -> str:
    """The reviewer's name, stripped; ConfigError when empty, too long or holding control characters."""
    text = " ".join(str(name or "").split())
    if not text:
        raise ConfigError("a reviewer name is required")
    if len(text) > MAX_REVIEWER_CHARS or not text.isprintable():
        raise ConfigError(f"reviewer name must be printable and at most {MAX_REVIEWER_CHARS} characters")
    return text


def check_comment(text: str) -> str:
    comment = str(text or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise ConfigError(f"comment longer than {MAX_COMMENT_CHARS} characters")
    return comment


def latest_reviews(db: sqlite3.Connection) -> dict[str, Review]:
    """specimen -> its newest review (the specimen's final result)."""
    if not has_table(db, "reviews"):
        return {}
    rows = db.execute(f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE id IN "
                      "(SELECT MAX(id) FROM reviews GROUP BY specimen)")
    return {review.specimen: review for review in map(Review.from_row, rows)}


def review_by_id(db: sqlite3.Connection, review_id: int) -> Review | None:
    if not has_table(db, "reviews"):
        return None
    row = db.execute(f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE id = ?", (review_id,)).fetchone()
    return Review.from_row(row) if row else None


def history(db: sqlite3.Connection, specimen: str) -> list[Review]:
    """Every review of a specimen, newest first."""
    if not has_table(db, "reviews"):
        return []
    rows = db.execute(f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE specimen = ? ORDER BY id DESC", (specimen,))
    return [Review.from_row(row) for row in rows]
