"""A byte budget for frames between the readers and the writers: queues bound frames, this bounds memory.

A reader reserves what decoding one file may take before it decodes (file bytes + H x W x 8, the worst case of
a 16-bit RGBA decode), shrinks the reservation to the frame it keeps, and the writer releases it. One input
larger than the whole budget still runs, alone.
"""

from __future__ import annotations

import threading

from hep2edge.imageio import header_pixels

DECODE_BYTES_PER_PIXEL = 8  # 4 channels x 16 bit: the most a decode allocates per pixel before reducing to gray


def decode_estimate(data: bytes) -> int:
    """Bytes one decode of `data` may hold at its peak (the file's own bytes included)."""
    pixels = header_pixels(data)
    return len(data) + (pixels * DECODE_BYTES_PER_PIXEL if pixels is not None else 2 * len(data))


class InflightBudget:
    """Blocking reservations of bytes, at most `limit` at once (a single larger one runs when nothing else does)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._changed = threading.Condition()

    def reserve(self, amount: int, cancelled: threading.Event, poll_s: float = 0.1) -> bool:
        """Wait until `amount` fits; False if `cancelled` is set first."""
        with self._changed:
            while self.used and self.used + amount > self.limit:
                if cancelled.is_set():
                    return False
                self._changed.wait(poll_s)
            self.used += amount
            self.peak = max(self.peak, self.used)
            return True

    def resize(self, old: int, new: int) -> None:
        """Keep `new` of an `old` reservation (a decoded frame is smaller than its decode's peak)."""
        self.release(old - new)

    def release(self, amount: int) -> None:
        with self._changed:
            self.used = max(0, self.used - amount)
            self._changed.notify_all()
