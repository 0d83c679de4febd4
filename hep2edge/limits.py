"""The largest image and file hep2edge reads (dependency-free: the CLI's option defaults come from here)."""

from __future__ import annotations

MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 1 << 30
