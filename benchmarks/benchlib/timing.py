"""Timed loops: warm-up calls, then timed calls until enough samples and seconds (or a cap) are reached.

Every timed call must return only when its work is finished (backends return host arrays, so GPU work is
synchronised); the clock is time.perf_counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

MIN_SAMPLES_AT_CAP = 3  # a slow call still gets this many samples before max_seconds stops the loop

BUDGETS = {
    # CPU: calls take 0.1-60 s (efficientnet-b4 on 2 cores); a few samples per cell
    "cpu": {"warmup": 2, "min_iters": 5, "min_seconds": 10.0, "max_seconds": 60.0, "max_iters": 500},
    # GPU: calls take milliseconds; enough samples for a meaningful p99
    "cuda": {"warmup": 20, "min_iters": 200, "min_seconds": 2.0, "max_seconds": 15.0, "max_iters": 5000},
    "quick": {"warmup": 2, "min_iters": 3, "min_seconds": 0.2, "max_seconds": 3.0, "max_iters": 50},
}


@dataclass(frozen=True)
class Budget:
    """How long to measure one cell."""

    warmup: int = 1
    min_iters: int = 5
    min_seconds: float = 10.0
    max_seconds: float = 60.0
    max_iters: int = 500

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Budget:
        values = {**BUDGETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def done(self, iters: int, elapsed: float) -> bool:
        if iters >= self.max_iters:
            return True
        if elapsed >= self.max_seconds and iters >= min(MIN_SAMPLES_AT_CAP, self.min_iters):
            return True
        return iters >= self.min_iters and elapsed >= self.min_seconds


def time_calls(call: Callable[[int], object], budget: Budget) -> list[float]:
    """Latencies in ms of `call(i)` after `budget.warmup` untimed calls."""
    for i in range(budget.warmup):
        call(i)
    samples: list[float] = []
    started = time.perf_counter()
    i = budget.warmup
    while not budget.done(len(samples), time.perf_counter() - started):
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1000)
        i += 1
    return samples
