"""Giving freed heap memory back to the OS: glibc keeps what threads freed in per-thread arenas, so a days-long
watcher's resident memory creeps up (the soak benchmark measured it) although its live objects do not."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)  # glibc only (not musl, macOS)
    return trim if callable(trim) else None


def release_free_memory() -> bool:
    """malloc_trim(0) where glibc has it; whether anything was called. A few ms, so call it now and then."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
