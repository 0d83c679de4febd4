"""One reporter interface for every stage: silent for libraries, lines for scripts, rich for the CLI."""

from __future__ import annotations

import io

from rich.console import Console

from hep2edge.cli.reporter import RichReporter
from hep2edge.progress import SILENT, LineReporter, LiveReporter, Reporter


def test_silent_and_line_reporters() -> None:
    SILENT.say("nothing")
    SILENT.progress("task", 1, 2)
    lines: list[str] = []
    reporter: Reporter = LineReporter(lines.append)
    reporter.say("step [1]")
    reporter.progress("reading", 1, 2)
    reporter.progress("reading", 2, 2)
    assert lines == ["step [1]", "reading: 2/2"]
    assert not isinstance(SILENT, LiveReporter) and not isinstance(reporter, LiveReporter)


def test_rich_reporter_prints_plain_lines_and_ends_bars() -> None:
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=200))
    reporter.say("wrote runs/export/1 [fp16] 3 files")
    for done in range(4):
        reporter.progress("reading", done, 3)
    assert out.getvalue().startswith("wrote runs/export/1 [fp16] 3 files\n")
    assert reporter._progress is None and not reporter._tasks
    assert isinstance(reporter, LiveReporter) and reporter.live(object()) is None  # not a terminal: lines instead
