"""Splitting a field's rows into bands that threads work on at once (OpenCV and the numba kernels release the
GIL), so the per-field post-processing uses every core of a small workstation or a Jetson."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

MAX_THREADS = 4
MIN_BAND_ROWS = 64  # thinner bands cost more to hand out than they save


def thread_count() -> int:
    """Threads the post-processing uses: the usable cores, at most MAX_THREADS."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_THREADS, usable))


def row_bands(height: int, parts: int | None = None) -> list[tuple[int, int]]:
    """(top, bottom) row ranges covering 0..height, one per thread (fewer for short fields)."""
    count = max(1, min(parts or thread_count(), height // MIN_BAND_ROWS))
    edges = np.linspace(0, height, count + 1).round().astype(int).tolist()
    return list(zip(edges[:-1], edges[1:]))


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="hep2edge-bands")


def run_parallel(calls: list[Callable[[], T]]) -> list[T]:
    """The calls' results in order: the first runs on this thread, the rest on the pool's."""
    if len(calls) <= 1:
        return [call() for call in calls]
    futures = [_pool().submit(call) for call in calls[1:]]
    return [calls[0](), *(future.result() for future in futures)]


def filter_in_bands(image: np.ndarray, reach: int, apply: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """apply(image) computed on row bands in parallel; each band is filtered with `reach` rows of context on
    either side (the filter's radius), so the result equals one call on the whole image."""
    bands = row_bands(image.shape[0])
    if len(bands) == 1:
        return apply(image)
    out = np.empty_like(image)

    def one(top: int, bottom: int) -> Any:
        start, stop = max(0, top - reach), min(image.shape[0], bottom + reach)
        out[top:bottom] = apply(image[start:stop])[top - start:bottom - start]

    run_parallel([partial(one, top, bottom) for top, bottom in bands])
    return out
