"""The CLI's reporter: lines printed on the rich console, transient progress bars, a live status where possible."""

from __future__ import annotations

from contextlib import AbstractContextManager

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status


class RichReporter:
    """hep2edge.progress.Reporter on a rich console; `spinner`: a status line that shows the latest line too."""

    def __init__(self, console: Console, spinner: Status | None = None, bars: bool = True) -> None:
        # a bar is a rich Live display, and one cannot start inside the spinner's: with a spinner, no bars
        self.console, self.spinner, self.bars = console, spinner, bars and spinner is None
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def say(self, text: str) -> None:
        """Print the line as it is (no markup, no highlighting)."""
        if self.spinner is not None:
            self.spinner.update(text)
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def progress(self, task: str, done: int, total: int) -> None:
        """A transient bar per running task; it goes once `done == total`."""
        if not self.bars:
            return
        if self._progress is None:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn())
            self._progress = Progress(*columns, console=self.console, transient=True)
            self._progress.start()
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)
        if done >= total:
            self._progress.remove_task(self._tasks.pop(task))
            if not self._tasks:
                self._progress.stop()
                self._progress = None

    def live(self, renderable: object) -> AbstractContextManager[object] | None:
        """A live display of `renderable` on a terminal; None elsewhere (a service log gets lines instead)."""
        if not self.console.is_terminal:
            return None
        return Live(renderable, console=self.console, refresh_per_second=4)  # type: ignore[arg-type]
