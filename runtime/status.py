"""The live status line (processed, queued, failed, latency, last result) and the run summary it feeds."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rich.text import Text

MAX_FAILURES_KEPT = 1000


@dataclass
class StatusBoard:
    """Counters shared by the pipeline threads; `render()` gives the one-line status."""

    processed: int = 0
    duplicates: int = 0
    skipped_failed: int = 0
    failed: int = 0
    waiting: int = 0  # truncated files read again when they change (still being written)
    queued: int = 0
    dropped: int = 0
    last_latency_ms: float = 0.0
    last_result: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def done(self, latency_ms: float, summary: str) -> None:
        with self._lock:
            self.processed += 1
            self.last_latency_ms = latency_ms
            self.last_result = summary

    def fail(self, key: str, reason: str) -> None:
        with self._lock:
            self.failed += 1
            self.failures.append((key, reason))
            if len(self.failures) > MAX_FAILURES_KEPT:  # a days-long watch keeps memory flat; results.db has all
                del self.failures[0]
            self.last_result = f"FAILED {reason}"

    def render(self) -> Text:
        with self._lock:
            parts = [
                ("processed ", f"{self.processed}"), ("  queued ", f"{self.queued}"),
                ("  failed ", f"{self.failed}"), ("  duplicates ", f"{self.duplicates}"),
            ]
            if self.dropped:
                parts.append(("  dropped ", f"{self.dropped}"))
            if self.waiting:
                parts.append(("  incomplete ", f"{self.waiting}"))
            parts.append(("  latency ", f"{self.last_latency_ms:.0f} ms"))
            text = Text()
            for label, value in parts:
                text.append(label, style="dim")
                text.append(value, style="bold red" if label.strip() == "failed" and value != "0" else "bold")
            if self.last_result:
                text.append("  last ", style="dim")
                text.append(self.last_result[:80])
            return text

    def __rich__(self) -> Text:
        return self.render()
