"""The soak benchmark's parts: a feeder that writes unique small TIFFs into a watched folder, a sampler of a
process's resident memory, and the figures (RSS after warm-up and at the end, slope over the second half).

The watcher runs as `hep2edge watch` in its own process, as on a microscope PC; this process feeds it and reads
/proc/PID/status and RESULTS/results.db once a second. Nothing here imports the watcher's code.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.imageio import encode_tiff

from .data import specimen_name, stamp

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class SoakFeeder(threading.Thread):
    """Writes `count` unique TIFFs into `folder`, each under a hidden name and renamed into place.

    At most `ahead` files are in the folder without their `<stem>.json` in `results` (the feeder waits), and with
    `rate` > 0 at most `rate` files per second: a steady stream the watcher can keep up with, so memory reflects
    the images processed, not a growing backlog. `stop` ends the feed early (a time budget).
    """

    def __init__(self, pool: Sequence[np.ndarray], folder: Path, results: Path, count: int, rate: float = 0.0,
                 ahead: int = 32) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self.pool, self.folder, self.results = list(pool), folder, results
        self.count, self.rate, self.ahead = count, rate, max(1, ahead)
        self.stop = threading.Event()
        self.fed = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.error: BaseException | None = None
        self._waiting: deque[str] = deque()

    def _outstanding(self) -> int:
        """Files fed whose result has not appeared (oldest first; results landing out of order count late)."""
        while self._waiting and (self.results / f"{self._waiting[0]}.json").exists():
            self._waiting.popleft()
        return len(self._waiting)

    def write(self, serial: int) -> None:
        name = specimen_name(serial)
        temporary = self.folder / f".{name}.tif.part"
        temporary.write_bytes(encode_tiff(stamp(self.pool[serial % len(self.pool)], serial)))
        os.rename(temporary, self.folder / f"{name}.tif")
        self._waiting.append(name)
        self.fed = serial + 1

    def run(self) -> None:
        try:
            start = time.monotonic()
            self.first_at = time.time()
            for serial in range(self.count):
                while not self.stop.is_set() and self._outstanding() >= self.ahead:
                    time.sleep(0.01)
                if self.rate > 0:
                    wait = start + serial / self.rate - time.monotonic()
                    if wait > 0:
                        self.stop.wait(wait)
                if self.stop.is_set():
                    break
                self.write(serial)
            self.last_at = time.time()
        except BaseException as exc:  # reported by the benchmark after the run
            self.error = exc


@dataclass
class Sample:
    """One reading of the watcher process: wall time (s since start), results so far, memory, CPU, threads, fds."""

    t: float
    processed: int
    rss_mb: float
    hwm_mb: float
    cpu_s: float
    threads: int
    fds: int
    feeding: bool = True  # False once the feed has ended: the watcher drains, then shuts down


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM (kB) and Threads of a process, from /proc/PID/status (empty once it has gone)."""
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                found[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return float("nan")


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class ResultCount:
    """Rows in RESULTS/results.db `results` (0 until the watcher has created it); read-only, never locks it."""

    def __init__(self, results: Path) -> None:
        self.path = results / "results.db"
        self._db: sqlite3.Connection | None = None
        self.last = 0

    def __call__(self) -> int:
        try:
            if self._db is None:
                if not self.path.is_file():
                    return self.last
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            self.last = int(self._db.execute("SELECT COUNT(*) FROM results").fetchall()[0][0])  # all: statement reset
        except sqlite3.Error:
            pass  # the schema is not there yet, or a checkpoint held the lock: keep the last count
        return self.last

    def states(self) -> dict[str, int]:
        """Inputs per journal state (done, failed, alias, ...) once the run is over."""
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return {}
        try:
            return {str(k): int(v) for k, v in db.execute("SELECT state, COUNT(*) FROM inputs GROUP BY state")}
        except sqlite3.Error:
            return {}
        finally:
            db.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def sample(pid: int, started: float, processed: int, feeding: bool) -> Sample | None:
    status = proc_status(pid)
    if "VmRSS" not in status:
        return None
    return Sample(round(time.monotonic() - started, 3), processed, status["VmRSS"] / 1024,
                  status.get("VmHWM", 0) / 1024, cpu_seconds(pid), status.get("Threads", 0), open_files(pid),
                  feeding)


def first_at_least(samples: Sequence[Sample], processed: float) -> Sample | None:
    return next((s for s in samples if s.processed >= processed), None)


def slope_kb_per_image(samples: Sequence[Sample], low: float, high: float) -> dict[str, float]:
    """Least-squares line through RSS (kB) against images processed, over samples with low <= processed <= high."""
    chosen = [s for s in samples if low <= s.processed <= high]
    x = np.array([s.processed for s in chosen], dtype=np.float64)
    if len(chosen) < 3 or np.ptp(x) == 0:
        return {"kb_per_image": float("nan"), "intercept_mb": float("nan"), "samples": len(chosen),
                "from_images": low, "to_images": high}
    y = np.array([s.rss_mb * 1024 for s in chosen], dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    return {"kb_per_image": float(slope), "intercept_mb": float(intercept / 1024), "samples": len(chosen),
            "from_images": float(x.min()), "to_images": float(x.max())}


def rate_between(a: Sample | None, b: Sample | None) -> float:
    if a is None or b is None or b.t <= a.t:
        return float("nan")
    return (b.processed - a.processed) / (b.t - a.t)


def rates(samples: Sequence[Sample], window: int = 5) -> list[float]:
    """Images/s at each sample over the last `window` intervals (NaN for the first)."""
    out = [float("nan")]
    for i in range(1, len(samples)):
        out.append(rate_between(samples[max(0, i - window)], samples[i]))
    return out


def figures(samples: Sequence[Sample], warmup_fraction: float, flat_kb: float) -> dict[str, Any]:
    """RSS after warm-up and at the end, the second-half slope, images/s, threads and fds, and a verdict.

    Only samples taken while files were still being fed count: after the feed the watcher drains its last
    files and shuts down (sessions closed, final specimen verdicts), which is not the steady state. The peak
    (VmHWM) covers the whole run.
    """
    steady = [s for s in samples if s.feeding]
    total = max((s.processed for s in steady), default=0)
    running = [s for s in steady if s.processed > 0]
    warm = first_at_least(steady, warmup_fraction * total) if total else None
    half = first_at_least(steady, total / 2) if total else None
    end = first_at_least(steady, total) if total else None
    second = slope_kb_per_image(steady, total / 2, total)
    after_warmup = slope_kb_per_image(steady, warm.processed if warm else 0, total)
    first_result = running[0] if running else None
    kb = second["kb_per_image"]
    verdict = "not measured" if not np.isfinite(kb) else ("plateau" if kb < flat_kb else "grows")
    return {
        "processed_while_feeding": total,
        "warmup_images": warm.processed if warm else None,
        "end_images": end.processed if end else None,
        "rss_mb": {"first_result": first_result.rss_mb if first_result else None,
                   "warmup": warm.rss_mb if warm else None, "half": half.rss_mb if half else None,
                   "end": end.rss_mb if end else None, "peak": max((s.hwm_mb for s in samples), default=None)},
        "slope": {"second_half": second, "after_warmup": after_warmup},
        "slope_kb_per_image": kb,
        "growth_mb_per_100k_images": kb * 100_000 / 1024 if np.isfinite(kb) else float("nan"),
        "images_s": {"overall": rate_between(first_result, end), "after_warmup": rate_between(warm, end),
                     "first_half": rate_between(warm, half), "second_half": rate_between(half, end)},
        "cpu_percent": 100 * rate_between_cpu(first_result, end),
        "threads": {"warmup": warm.threads if warm else None, "end": end.threads if end else None},
        "fds": {"warmup": warm.fds if warm else None, "end": end.fds if end else None},
        "flat_kb": flat_kb,
        "verdict": verdict,
    }


def rate_between_cpu(a: Sample | None, b: Sample | None) -> float:
    """CPU seconds per wall second between two samples (1.0 = one core busy)."""
    if a is None or b is None or b.t <= a.t:
        return float("nan")
    return (b.cpu_s - a.cpu_s) / (b.t - a.t)


def as_rows(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(s).items()} for s in samples]


def from_rows(rows: Sequence[dict[str, Any]]) -> list[Sample]:
    return [Sample(**row) for row in rows]
