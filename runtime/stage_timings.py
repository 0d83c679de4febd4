"""Per-stage timings (time.perf_counter) and their p50/p95/p99 table for `--stats`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from rich.table import Table

STAGE_ORDER = ("read", "decode", "preprocess", "queue", "infer", "stitch", "write", "journal", "end_to_end")
WINDOW = 10_000  # samples kept per stage: percentiles cover the most recent ones; 80 kB per stage, never more


class _Recent:
    """The last `size` samples of one stage in a float64 ring buffer (8 bytes each), and how many were added.

    A list of Python floats costs 32 bytes a sample and grew with every image of a days-long watch.
    """

    __slots__ = ("count", "values")

    def __init__(self, size: int) -> None:
        self.values = np.empty(size, dtype=np.float64)  # pages are touched as samples arrive
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % self.values.size] = value
        self.count += 1

    def window(self) -> np.ndarray:
        """A copy of the samples kept (in no particular order once the buffer has wrapped)."""
        return self.values[: min(self.count, self.values.size)].copy()


class StageStats:
    """Thread-safe collector of durations in milliseconds per stage name.

    `percentiles()` gives `n` = samples added since the start, and p50/p95/p99/mean over the last `window` of
    them: memory stays flat however long a watch runs.
    """

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 sample, got {window}")
        self.window = window
        self._lock = threading.Lock()
        self._samples: dict[str, _Recent] = {}

    def add(self, stage: str, milliseconds: float) -> None:
        with self._lock:
            recent = self._samples.get(stage)
            if recent is None:
                recent = self._samples[stage] = _Recent(self.window)
            recent.add(milliseconds)

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
        """{stage: {n, window, p50, p95, p99, mean}} in milliseconds, stages in pipeline order; `n` counts every
        sample, `window` how many of the latest the percentiles and mean cover."""
        with self._lock:
            snapshot = {k: (v.count, v.window()) for k, v in self._samples.items() if v.count}
        order = [s for s in STAGE_ORDER if s in snapshot] + sorted(set(snapshot) - set(STAGE_ORDER))
        table = {}
        for stage in order:
            count, values = snapshot[stage]
            p50, p95, p99 = np.percentile(values, (50, 95, 99))
            table[stage] = {"n": float(count), "window": float(values.size), "p50": float(p50), "p95": float(p95),
                            "p99": float(p99), "mean": float(values.mean())}
        return table


def percentile_table(stages: dict[str, dict[str, float]], title: str = "stage timings (ms)") -> Table:
    """The `--stats` table of StageStats.percentiles()."""
    out = Table(title=title)
    for column in ("stage", "n", "p50", "p95", "p99", "mean"):
        out.add_column(column, justify="left" if column == "stage" else "right")
    for stage, row in stages.items():
        out.add_row(stage, f"{int(row['n'])}", *(f"{row[k]:.1f}" for k in ("p50", "p95", "p99", "mean")))
    return out
