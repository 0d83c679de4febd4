"""`results.csv` and `specimens.csv`, regenerated from results.db and written atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from hep2edge.atomic import atomic_write_text
from hep2edge.runtime.journal import RESULT_COLUMNS, Journal
from hep2edge.runtime.sinks.base import TableSink

SPECIMEN_COLUMNS = ("specimen", "images", "complete", "pattern", "pattern_probability", "intensity",
                    "intensity_probability", "method")


def to_csv(header: Sequence[str], rows: list[tuple[Any, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


class CsvSink(TableSink):
    """One row per analysed image (and per specimen), ordered by analysis time."""

    name = "csv"

    def refresh(self, journal: Journal) -> None:
        rows = journal.query(f"SELECT {', '.join(RESULT_COLUMNS)} FROM results ORDER BY analysed_at, stem")
        atomic_write_text(self.results_dir / "results.csv", to_csv(RESULT_COLUMNS, rows))
        specimens = journal.query(f"SELECT {', '.join(SPECIMEN_COLUMNS)} FROM specimens ORDER BY specimen")
        if specimens:
            atomic_write_text(self.results_dir / "specimens.csv", to_csv(SPECIMEN_COLUMNS, specimens))
