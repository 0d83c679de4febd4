"""Per-stage timings (time.perf_counter) and their p50/p95/p99 table for `--stats`."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from rich.table import Table

STAGE_ORDER = ("read", "decode", "preprocess", "queue", "infer", "stitch", "write", "journal", "end_to_end")
MAX_SAMPLES = 100_000  # per stage; older samples are dropped so memory stays flat in a days-long watch


class StageStats:
    """Thread-safe collector of durations in milliseconds per stage name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, milliseconds: float) -> None:
        with self._lock:
            samples = self._samples[stage]
            samples.append(milliseconds)
            if len(samples) > MAX_SAMPLES:
                del samples[: len(samples) - MAX_SAMPLES]

    @contextmanager
    def time(self, stage: str, into: dict[str, float] | None = None) -> Iterator[None]:
        """Time a block; also add the duration to `into` (a frame's own timings) when given."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self.add(stage, elapsed)
            if into is not None:
                into[stage] = into.get(stage, 0.0) + elapsed

    def percentiles(self) -> dict[str, dict[str, float]]:
        """{stage: {n, p50, p95, p99, mean}} in milliseconds, stages in pipeline order."""
        with self._lock:
            snapshot = {k: np.array(v) for k, v in self._samples.items() if v}
        order = [s for s in STAGE_ORDER if s in snapshot] + sorted(set(snapshot) - set(STAGE_ORDER))
        table = {}
        for stage in order:
            values = snapshot[stage]
            p50, p95, p99 = np.percentile(values, (50, 95, 99))
            table[stage] = {"n": float(len(values)), "p50": float(p50), "p95": float(p95), "p99": float(p99),
                            "mean": float(values.mean())}
        return table


def percentile_table(stages: dict[str, dict[str, float]], title: str = "stage timings (ms)") -> Table:
    """The `--stats` table of StageStats.percentiles()."""
    out = Table(title=title)
    for column in ("stage", "n", "p50", "p95", "p99", "mean"):
        out.add_column(column, justify="left" if column == "stage" else "right")
    for stage, row in stages.items():
        out.add_row(stage, f"{int(row['n'])}", *(f"{row[k]:.1f}" for k in ("p50", "p95", "p99", "mean")))
    return out
