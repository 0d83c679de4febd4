"""Folder watching: inotify through watchdog (or polling for network shares), emitting only complete files.

A file is complete when its size and mtime have not changed for `settle_ms`, or when it was renamed into
place from a temporary/hidden name. Hidden, temporary and non-image files are ignored; only regular files are
emitted, and a path whose real location lies outside the watched folder (a symlink pointing out) is never read.
At start, files already in the folder are compared with what the journal finished (`StartupScan`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from hep2edge.errors import ConfigError
from hep2edge.regular_file import Signature, file_kind, signature_of
from hep2edge.runtime.sources.base import Emit, Item, Source, is_candidate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchConfig:
    folder: Path
    recursive: bool = False
    poll: bool = False
    poll_interval_s: float = 1.0
    settle_ms: int = 1000
    existing: bool = False
    max_files: int = 0  # 0 = until stopped; else end (draining in-flight work) after this many files

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: not a folder to watch")
        if self.settle_ms < 0:
            raise ConfigError(f"--settle must be >= 0 ms, got {self.settle_ms}")
        if self.max_files < 0:
            raise ConfigError(f"`max_files` must be >= 0, got {self.max_files}")


def inside(path: Path, root: Path) -> bool:
    """Whether the real location of `path` (symlinks resolved) lies inside `root`."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(root)
    except OSError:
        return False


@dataclass(frozen=True)
class StartupScan:
    """What the watcher does with the files already in the folder when it starts.

    `analyse`: queue every file not finished unchanged (a restart, or `existing`); else the files modified
    before `started` are the baseline, handed to `record_baseline` (a first watch without `existing`), and
    newer ones arrived after this run began. `finished`: path -> the signature the journal finished it with
    (None: unknown, treated as unchanged).
    """

    analyse: bool = False
    started: float = float("inf")
    finished: dict[str, Signature | None] = field(default_factory=dict)
    record_baseline: Callable[[list[tuple[str, Signature]]], None] | None = None


def _stat(path: Path) -> os.stat_result | None:
    """The path's stat (symlinks followed), None once it has gone."""
    try:
        return path.stat()
    except OSError:
        return None


class _Pending:
    """Candidate files waiting to settle: path -> (size, mtime, first time this signature was seen)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[Path, tuple[int, float, float]] = {}
        self.renamed: set[Path] = set()
        self.wake = threading.Event()  # a file renamed into place is complete: emit it now, not at the next tick

    def touch(self, path: Path, renamed: bool = False) -> None:
        with self.lock:
            self.files[path] = (-1, -1.0, time.monotonic())
            if renamed:
                self.renamed.add(path)
        if renamed:
            self.wake.set()


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, pending: _Pending) -> None:
        self.root = root
        self.pending = pending

    def _consider(self, raw: str | bytes, renamed: bool = False) -> None:
        path = Path(os.fsdecode(raw))
        if is_candidate(path, self.root):
            self.pending.touch(path, renamed)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._consider(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._consider(event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._consider(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            source = Path(os.fsdecode(event.src_path))
            self._consider(event.dest_path, renamed=not is_candidate(source, self.root))


class FolderWatchSource(Source):
    """`hep2edge watch FOLDER`: runs until stopped."""

    name = "watch"
    finite = False
    MAX_TICK_S = 0.25  # how often settling files are checked (and a stop is noticed) at the latest

    def __init__(self, config: WatchConfig, first: list[Path] | None = None, scan: StartupScan | None = None) -> None:
        super().__init__()
        self.config = config
        self.root = Path(os.path.realpath(config.folder))
        self.first = first or []  # re-queued from the journal after a restart
        self.scan = scan or StartupScan(analyse=config.existing)
        self._pending = _Pending()
        self.emitted = 0
        self.finite = config.max_files > 0

    def describe(self) -> str:
        how = f"polling every {self.config.poll_interval_s:g} s" if self.config.poll else "inotify"
        limit = f", until {self.config.max_files} file(s)" if self.config.max_files else ""
        return f"watching {self.config.folder} ({how}{', recursive' if self.config.recursive else ''}{limit})"

    def _observer(self) -> BaseObserver:
        if self.config.poll:
            return PollingObserver(timeout=self.config.poll_interval_s)
        return Observer()

    def existing_files(self) -> list[tuple[Path, Signature]]:
        """Image-named regular files in the folder now, with their signatures (one stat each); anything else so
        named (a FIFO) is logged and skipped."""
        pattern = "**/*" if self.config.recursive else "*"
        found = []
        for path in sorted(p for p in self.root.glob(pattern) if is_candidate(p, self.root)):
            info = _stat(path)
            if info is not None and stat.S_ISREG(info.st_mode):
                found.append((path, signature_of(info)))
            elif info is not None and not stat.S_ISDIR(info.st_mode):
                log.warning("%s: skipped, it is %s, not an image file", path, file_kind(info.st_mode))
        return found

    def _emit_path(self, path: Path, emit: Emit) -> bool:
        """Emit one settled file; False once the pipeline stops accepting input or `max_files` is reached."""
        if not inside(path, self.root):
            log.warning("%s: skipped, it links outside the watched folder %s", path, self.root)
            return True
        info = _stat(path)
        if info is None:
            return True  # gone before it was read
        if not stat.S_ISREG(info.st_mode):
            log.warning("%s: skipped, it is %s, not an image file", path, file_kind(info.st_mode))
            return True
        item = Item(key=str(path), name=path.stem, path=path, within=self.root,
                    retry=lambda: self._pending.touch(path))
        if not emit(item):
            return False
        self.emitted += 1
        return not (self.config.max_files and self.emitted >= self.config.max_files)

    def _settled(self, now: float) -> list[Path]:
        """Pending files whose size and mtime stayed the same for settle_ms (or that were renamed into place)."""
        ready = []
        settle = self.config.settle_ms / 1000
        with self._pending.lock:
            for path, (size, mtime, since) in list(self._pending.files.items()):
                try:
                    stat = path.stat()
                except OSError:  # deleted or renamed away before it settled
                    del self._pending.files[path]
                    self._pending.renamed.discard(path)
                    continue
                if path in self._pending.renamed or (
                    (stat.st_size, stat.st_mtime) == (size, mtime) and now - since >= settle
                ):
                    ready.append(path)
                    del self._pending.files[path]
                    self._pending.renamed.discard(path)
                elif (stat.st_size, stat.st_mtime) != (size, mtime):
                    self._pending.files[path] = (stat.st_size, stat.st_mtime, now)
        return sorted(ready)

    def _scan_existing(self) -> None:
        """Queue the files already here that the journal has not finished unchanged, or record the baseline."""
        first, baseline = {str(p) for p in self.first}, []
        for path, current in self.existing_files():
            key = str(path)
            if key in first:
                continue
            if key in self.scan.finished and self.scan.finished[key] in (None, current):
                continue
            if self.scan.analyse or current[1] >= self.scan.started * 1e9:
                self._pending.touch(path)
            else:
                baseline.append((key, current))
        if baseline and self.scan.record_baseline is not None:
            self.scan.record_baseline(baseline)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        observer = self._observer()
        observer.schedule(_Handler(self.root, self._pending), str(self.root), recursive=self.config.recursive)
        observer.start()
        try:
            for path in self.first:
                if path.exists() and not self._emit_path(path, emit):
                    return
            self._scan_existing()
            tick = max(0.02, min(self.MAX_TICK_S, self.config.settle_ms / 4000))
            while not stop.is_set():
                self._pending.wake.wait(tick)
                self._pending.wake.clear()
                if stop.is_set():
                    return
                for path in self._settled(time.monotonic()):
                    if not self._emit_path(path, emit):
                        return
        finally:
            observer.stop()
            observer.join(timeout=5)
