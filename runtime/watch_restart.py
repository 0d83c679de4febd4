"""What a (re)started watcher must look at besides new events, so nothing is lost across a crash or a stop.

The folder and the journal are the truth. Inputs an earlier run queued or started but never finished come
first. Then every image in the folder that the journal has not finished with its current size and mtime is
analysed, whatever its age (moved in, `cp -p`, unzipped while nobody watched). Only the very first watch of a
folder without `existing` leaves the files that were there before it started alone, and journals them as that
baseline.
"""

from __future__ import annotations

from pathlib import Path

from hep2edge.runtime.journal import Journal
from hep2edge.runtime.sources.watch import FolderWatchSource, StartupScan, WatchConfig, inside


def restart_source(journal: Journal, config: WatchConfig) -> FolderWatchSource:
    """The folder watcher for this run, with the journal's unfinished inputs queued first."""
    root = FolderWatchSource(config).root
    unfinished = [Path(path) for path, _, _ in journal.unfinished()]
    first = list(dict.fromkeys(p for p in unfinished if p.is_file() and inside(p, root)))
    analyse = config.existing or journal.has_history()
    scan = StartupScan(analyse, journal.run_started, journal.finished_signatures(),
                       None if analyse else journal.ignore)
    return FolderWatchSource(config, first, scan)
