"""LIS export of reviewed specimens (HL7 v2 ORU^R01 or CSV), each review sent once, recorded in `exports`.

Only confirmed or corrected specimens go out; a specimen is sent again when a newer review changes its
result (HL7 result status C), or on demand with `again`. The file is written atomically first, then the
export journal; a failure in between leaves the specimens to be sent next time, never lost.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hep2edge.atomic import atomic_write_text
from hep2edge.errors import ConfigError, require
from hep2edge.review.db import ResultsDB, has_table
from hep2edge.review.icap import icap_label
from hep2edge.review.worklist import Entry, entries

FORMATS = ("hl7", "csv")
CSV_COLUMNS = ("specimen", "status", "patterns", "icap", "intensity", "model_pattern", "model_pattern_probability",
               "model_intensity", "model_id", "images", "complete", "reviewer", "reviewed_at", "review_id", "comment")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the file (None when nothing was new), how many specimens, how many were old."""

    file: Path | None
    exported: list[str]
    already: int


def export_results(store: ResultsDB, fmt: str, out: Path, again: bool = False) -> ExportSummary:
    """Write the reviewed specimens not yet exported in `fmt` (all of them with `again`) to `out`."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "hl7":
        require("hl7apy", "review")
    with store.connect() as db:
        reviewed = sorted((e for e in entries(db) if e.review is not None), key=lambda e: e.key)
        sent = _sent(db, fmt)
    chosen = reviewed if again else [e for e in reviewed if e.review is not None and e.review.id not in sent]
    if not chosen:
        return ExportSummary(None, [], len(reviewed))
    now = time.time()
    body = _hl7(chosen, sent, now) if fmt == "hl7" else _csv(chosen)
    atomic_write_text(out, body)
    with store.transaction() as db:
        db.executemany("INSERT INTO exports(specimen, review, format, file, at) VALUES (?, ?, ?, ?, ?)",
                       [(e.key, e.review.id if e.review else 0, fmt, str(out), now) for e in chosen])
    return ExportSummary(out, [e.key for e in chosen], len(reviewed) - len(chosen))


def _sent(db: sqlite3.Connection, fmt: str) -> dict[int, str]:
    """review id -> specimen, for every review already exported in `fmt`."""
    if not has_table(db, "exports"):
        return {}
    return {int(r): str(s) for r, s in db.execute("SELECT review, specimen FROM exports WHERE format = ?", (fmt,))}


def _hl7(chosen: list[Entry], sent: dict[int, str], now: float) -> str:
    from hep2edge.review.hl7 import oru_r01

    def corrected(e: Entry) -> bool:  # another review of the specimen went out before: this one corrects it
        return any(specimen == e.key and e.review is not None and review != e.review.id
                   for review, specimen in sent.items())

    messages = [oru_r01(e, uuid.uuid4().hex[:20].upper(), corrected(e), now) for e in chosen]
    return "".join(message + "\r" for message in messages)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _csv(chosen: list[Entry]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in chosen:
        review = e.review
        assert review is not None
        model = e.model
        writer.writerow([
            e.key, e.status, ";".join(review.after.patterns), ";".join(icap_label(p) for p in review.after.patterns),
            review.after.intensity, model.pattern if model else "",
            "" if e.pattern_probability is None else f"{e.pattern_probability:.4f}",
            model.intensity if model else "", e.model_id, e.images, int(e.complete), review.reviewer,
            _iso(review.at), review.id, review.comment,
        ])
    return buffer.getvalue()
