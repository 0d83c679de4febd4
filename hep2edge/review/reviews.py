"""Recording a review: confirm the current result or correct it, appended to `reviews` in one transaction.

Two reviewers on one specimen: each form carries the id of the review it was based on (`base`, 0 for the
model's verdict) and when the model verdict it showed was written (`verdict_at`, 0 for none yet); a save
whose base is no longer the newest, or whose verdict changed underneath, raises ConflictError and writes
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hep2edge.errors import ConfigError, Hep2EdgeError
from hep2edge.review.db import ResultsDB
from hep2edge.review.verdicts import Review, Verdict, check_comment, check_reviewer, review_by_id
from hep2edge.review.worklist import Entry, entry


class ConflictError(Hep2EdgeError):
    """The specimen changed after the reviewer opened it; nothing was saved."""


class UnknownSpecimenError(ConfigError):
    """No specimen (or lone image) of that name in results.db."""


@dataclass(frozen=True)
class ReviewRequest:
    """A confirmation (no patterns, no intensity) or a correction (either or both given).

    `base` None skips the conflict check (scripted reviews); patterns are canonical names, primary first.
    """

    specimen: str
    reviewer: str
    patterns: tuple[str, ...] = ()
    intensity: str = ""
    comment: str = ""
    base: int | None = None
    verdict_at: float | None = None


def record_review(store: ResultsDB, request: ReviewRequest) -> Review:
    """Append a confirmation or correction; ConflictError / ConfigError leave the table as it was."""
    reviewer = check_reviewer(request.reviewer)
    comment = check_comment(request.comment)
    with store.connect() as db:  # an unknown specimen is refused before anything is written
        found = entry(db, request.specimen)
    if found is None:
        raise UnknownSpecimenError(f"{store.results}: no specimen {request.specimen!r} in {store.path.name}")
    with store.transaction() as db:
        current = entry(db, request.specimen) or found
        _check_base(current, request)
        before = current.final
        after = _after(current, before, request)
        cursor = db.execute(
            "INSERT INTO reviews(specimen, based_on, reviewer, at, action, before, after, comment, model_id, "
            "verdict_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (current.key, current.review.id if current.review else None, reviewer, time.time(),
             "confirmed" if after == before else "corrected", before.to_json() if before else None,
             after.to_json(), comment, current.model_id, current.verdict_at))
        review = review_by_id(db, int(cursor.lastrowid or 0))
    assert review is not None
    return review


def _after(current: Entry, before: Verdict | None, request: ReviewRequest) -> Verdict:
    """The result the request asks for: the current one (confirm), or it with the given parts replaced."""
    if before is not None:
        return Verdict(request.patterns or before.patterns, request.intensity or before.intensity)
    if not (request.patterns and request.intensity):
        raise ConfigError(f"specimen {current.key} has no model verdict yet ({current.images} image(s), "
                          "incomplete): name its pattern(s) and intensity instead of confirming")
    return Verdict(request.patterns, request.intensity)


def _check_base(current: Entry, request: ReviewRequest) -> None:
    """ConflictError if the specimen was reviewed or re-analysed since the reviewer's page was made."""
    if request.base is not None:
        review = current.review
        if (review.id if review else 0) != request.base:
            if review is None:
                raise ConflictError(f"specimen {current.key} has no review {request.base}; reload it")
            when = time.strftime("%H:%M:%S", time.localtime(review.at))
            raise ConflictError(f"specimen {current.key} was {review.action} by {review.reviewer} at {when} "
                                f"({review.after}) after you opened it; your change was not saved")
    if request.verdict_at is not None and abs((current.verdict_at or 0.0) - request.verdict_at) > 1e-3:
        raise ConflictError(f"specimen {current.key} was re-analysed after you opened it (the model's verdict is "
                            f"now {current.model}); your change was not saved")
