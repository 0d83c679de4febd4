"""How every stage reports to whoever runs it: one `Reporter` (a line, or progress on a task), silent for libraries.

Library calls take a `reporter` and default to `SILENT`; the CLI supplies a rich one (hep2edge.cli.reporter);
scripts that print lines wrap their function with `LineReporter`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable


class Reporter(Protocol):
    """What a stage tells its caller: a line of text, and how far a named task has come."""

    def say(self, text: str) -> None:
        """Show one line (plain text: no markup)."""

    def progress(self, task: str, done: int, total: int) -> None:
        """`done` of `total` steps of `task` are finished (`done == total` ends it)."""


@runtime_checkable
class LiveReporter(Reporter, Protocol):
    """A reporter that can keep a renderable on screen (a terminal); `live` returns None where it cannot."""

    def live(self, renderable: object) -> AbstractContextManager[object] | None:
        """A context that shows `renderable`, refreshed, while it is open."""


class Silent:
    """Says nothing: the default of every library call."""

    def say(self, text: str) -> None:
        """Drop the line."""

    def progress(self, task: str, done: int, total: int) -> None:
        """Drop the progress."""


class LineReporter:
    """Each line to `write` (print, a logger, a script's own `say`); a task's progress once, when it ends."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def say(self, text: str) -> None:
        """Pass the line on."""
        self.write(text)

    def progress(self, task: str, done: int, total: int) -> None:
        """One line when the task is done."""
        if done >= total:
            self.write(f"{task}: {done}/{total}")


SILENT: Reporter = Silent()
