"""`results.csv` and `specimens.csv`, regenerated from results.db and written atomically.

Rows are streamed from a read-only connection of their own (a consistent WAL snapshot) into the temporary file:
memory stays flat however many results RESULTS holds, and the writers' journal connection is not held meanwhile.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from hep2edge.atomic import OutputWriteError, atomic_writer
from hep2edge.runtime.journal import RESULT_COLUMNS, Journal
from hep2edge.runtime.sinks.base import TableSink

SPECIMEN_COLUMNS = ("specimen", "images", "complete", "pattern", "pattern_probability", "intensity",
                    "intensity_probability", "method")
FETCH_ROWS = 500


def write_csv(path: Path, header: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Stream `rows` into `path` atomically."""
    with atomic_writer(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        text.flush()
        text.detach()  # atomic_writer fsyncs and closes the file itself


def _stream(db: sqlite3.Connection, sql: str) -> Iterable[tuple[Any, ...]]:
    cursor = db.execute(sql)
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield from rows


class CsvSink(TableSink):
    """One row per current result (and per specimen), ordered by analysis time."""

    name = "csv"

    def refresh(self, journal: Journal) -> None:
        try:
            with closing(sqlite3.connect(f"{journal.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as db:
                db.execute("BEGIN")  # one snapshot for both tables
                self._write(db)
        except sqlite3.Error as exc:
            raise OutputWriteError(f"{journal.path}: cannot read the journal for the tables ({exc})") from exc

    def _write(self, db: sqlite3.Connection) -> None:
        results = f"SELECT {', '.join(RESULT_COLUMNS)} FROM results ORDER BY analysed_at, stem"
        write_csv(self.results_dir / "results.csv", RESULT_COLUMNS, _stream(db, results))
        if db.execute("SELECT 1 FROM specimens LIMIT 1").fetchone():
            specimens = f"SELECT {', '.join(SPECIMEN_COLUMNS)} FROM specimens ORDER BY specimen"
            write_csv(self.results_dir / "specimens.csv", SPECIMEN_COLUMNS, _stream(db, specimens))
