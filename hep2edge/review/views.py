"""What the pages show, gathered from results.db and the RESULTS files (no HTML here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hep2edge.labels import PATTERNS
from hep2edge.review.db import ResultsDB
from hep2edge.review.files import image_files, png_problem, tile_evidence
from hep2edge.review.verdicts import Review, history, review_by_id
from hep2edge.review.worklist import Entry, ImageRow, entries, entry, images, neighbours


@dataclass(frozen=True)
class Picture:
    """An overlay or mask to show: its URL, or the one line saying why it cannot be shown."""

    name: str
    url: str | None
    problem: str | None


@dataclass(frozen=True)
class FieldView:
    """One field of the specimen page."""

    image: ImageRow
    overlay: Picture
    mask: Picture
    tiles: list[dict[str, Any]]
    tiles_problem: str | None


@dataclass(frozen=True)
class SpecimenView:
    entry: Entry
    fields: list[FieldView]
    history: list[Review]
    probabilities: list[tuple[str, float]]
    previous: str | None
    next: str | None


def picture(path: Path, optional: bool) -> Picture:
    """A PNG in RESULTS as something to show; a missing optional one (overlay without --overlay) says so."""
    problem = png_problem(path)
    if problem == "missing" and optional:
        problem = "not written (the run had no --overlay)"
    return Picture(path.name, None if problem else f"/files/{path.name}", problem)


def field_view(results: Path, image: ImageRow) -> FieldView:
    files = image_files(results, image.stem)
    tiles, tiles_problem = tile_evidence(results, image.stem)
    return FieldView(image, picture(files["overlay"], optional=True), picture(files["mask"], optional=False),
                     tiles, tiles_problem)


def mean_probabilities(rows: list[ImageRow]) -> list[tuple[str, float]]:
    """The specimen's pattern probabilities (mean over its fields), most probable first."""
    if not rows:
        return []
    means = {name: sum(r.probabilities[name] for r in rows) / len(rows) for name in PATTERNS}
    return sorted(means.items(), key=lambda item: item[1], reverse=True)


def specimen_view(store: ResultsDB, key: str) -> SpecimenView | None:
    """Everything the specimen page shows, or None for an unknown specimen."""
    with store.connect() as db:
        found = entry(db, key)
        if found is None:
            return None
        rows = images(db, key)
        reviews = history(db, key)
        order = [e.key for e in entries(db)]
    previous, following = neighbours(order, key)
    return SpecimenView(found, [field_view(store.results, row) for row in rows], reviews,
                        mean_probabilities(rows), previous, following)


def next_to_review(store: ResultsDB, key: str) -> str | None:
    """The next specimen still `new` after `key` in worklist order (wrapping round), or None."""
    with store.connect() as db:
        order = [e.key for e in entries(db, status="new")]
        everything = [e.key for e in entries(db)]
    after = everything[everything.index(key) + 1:] if key in everything else []
    return next((k for k in after if k in order), None) or next((k for k in order if k != key), None)


def saved_review(store: ResultsDB, review_id: int | None) -> Review | None:
    if not review_id:
        return None
    with store.connect() as db:
        return review_by_id(db, review_id)
