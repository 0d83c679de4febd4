"""Latency percentiles, throughput in a steady-state window, and the pipeline-to-backend ratio."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """{n, p50, p95, p99, mean, min, max} of latencies in ms (linear interpolation; NaN when empty)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p95": nan, "p99": nan, "mean": nan, "min": nan, "max": nan}
    p50, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
    return {"n": int(values.size), "p50": p50, "p95": p95, "p99": p99, "mean": float(values.mean()),
            "min": float(values.min()), "max": float(values.max())}


def per_second(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def steady_rate(done_at: Sequence[float], trim: float = 0.1) -> dict[str, float]:
    """Completions per second between the `trim` and `1 - trim` quantiles of completion times.

    Leaving out the first and last tenth drops the warm-up (first batches, graph captures) and the drain
    (a pipeline that runs dry at the end), so the figure is the rate the pipeline sustains.
    """
    times = np.sort(np.asarray(done_at, dtype=np.float64))
    if times.size < 3:
        return {"rate": float("nan"), "counted": 0, "window_s": float("nan")}
    first = int(np.floor(trim * (times.size - 1)))
    last = int(np.ceil((1 - trim) * (times.size - 1)))
    if last <= first:
        first, last = 0, times.size - 1
    window = float(times[last] - times[first])
    return {"rate": per_second(last - first, window), "counted": last - first, "window_s": window}


def pipeline_ratio(pipeline_rate: float, backend_rate: float) -> float:
    """Steady pipeline throughput over the bare backend's at the same batch (1.0 = no pipeline overhead)."""
    if not (backend_rate > 0 and np.isfinite(backend_rate) and np.isfinite(pipeline_rate)):
        return float("nan")
    return float(pipeline_rate / backend_rate)
