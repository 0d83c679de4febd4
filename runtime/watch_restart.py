"""What a (re)started watcher must look at besides new events, so nothing is lost across a crash or a stop.

Inputs an earlier run queued or started but never finished come first. Files modified since the previous run
started (or, on a first run, since this one started) are picked up too: they arrived while nobody watched.
"""

from __future__ import annotations

from pathlib import Path

from hep2edge.runtime.journal import Journal
from hep2edge.runtime.sources.watch import FolderWatchSource, WatchConfig, inside


def restart_source(journal: Journal, config: WatchConfig) -> FolderWatchSource:
    """The folder watcher for this run, with the journal's unfinished inputs queued first."""
    root = FolderWatchSource(config).root
    unfinished = [Path(path) for path, _, _ in journal.unfinished()]
    first = list(dict.fromkeys(p for p in unfinished if p.is_file() and inside(p, root)))
    since = journal.previous_run_started() or journal.run_started
    finished = {row[0] for row in journal.query("SELECT path FROM inputs WHERE state IN ('done', 'failed', 'alias')")}
    return FolderWatchSource(config, first, since, finished)
