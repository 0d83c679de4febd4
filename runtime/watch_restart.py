"""What a restarted watcher must look at first so nothing is lost across a crash or a stop.

Inputs an earlier run queued or started but never finished, and, unless `--existing` re-scans everything
anyway, images that arrived in the folder after the previous run started (while nobody was watching).
"""

from __future__ import annotations

from pathlib import Path

from hep2edge.runtime.journal import Journal
from hep2edge.runtime.sources.watch import FolderWatchSource, WatchConfig, inside


def catch_up_paths(journal: Journal, config: WatchConfig) -> list[Path]:
    root = FolderWatchSource(config).root
    unfinished = [Path(path) for path, _, _ in journal.unfinished()]
    paths = [p for p in unfinished if p.is_file() and inside(p, root)]
    since = journal.previous_run_started()
    if since is not None and not config.existing:
        known = {row[0] for row in journal.query("SELECT path FROM inputs")}
        for path in FolderWatchSource(config).existing_files():
            if str(path) not in known and path.stat().st_mtime >= since:
                paths.append(path)
    return list(dict.fromkeys(paths))
