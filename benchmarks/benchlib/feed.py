"""Drive a watched folder like a scanner and observe the results like a LIMS would.

`Feeder` copies prepared files into the watched folder at a set rate (or all at once), each written under a
hidden temporary name and renamed into place, and notes when each became complete. `ResultMonitor` watches
the RESULTS folder through inotify and notes when each `<stem>.json` (written last, atomically) appears.
Both use time.perf_counter in this process, so their difference is the file-complete -> result-written
latency.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class Feeder(threading.Thread):
    """Copies `files` into `folder` (`rate` files per second, or None for all at once) after `delay_s`."""

    def __init__(self, files: list[Path], folder: Path, rate: float | None, delay_s: float = 0.5) -> None:
        super().__init__(name="feeder", daemon=True)
        self.files, self.folder, self.rate, self.delay_s = files, folder, rate, delay_s
        self.complete_at: dict[str, float] = {}
        self.error: BaseException | None = None

    def copy(self, source: Path) -> None:
        temporary = self.folder / f".{source.name}.part"
        shutil.copyfile(source, temporary)
        os.replace(temporary, self.folder / source.name)
        self.complete_at[source.stem] = time.perf_counter()

    def run(self) -> None:
        try:
            time.sleep(self.delay_s)
            start = time.perf_counter()
            for index, source in enumerate(self.files):
                if self.rate:
                    wait = start + index / self.rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                self.copy(source)
        except BaseException as exc:  # reported by the benchmark after the run
            self.error = exc


class _ResultEvents(FileSystemEventHandler):
    def __init__(self, stems: set[str], written_at: dict[str, float]) -> None:
        self.stems, self.written_at = stems, written_at

    def _note(self, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        if path.suffix == ".json" and path.stem in self.stems:
            self.written_at.setdefault(path.stem, time.perf_counter())

    def on_moved(self, event: FileSystemEvent) -> None:
        self._note(event.dest_path)

    def on_created(self, event: FileSystemEvent) -> None:
        self._note(event.src_path)


class ResultMonitor:
    """`with ResultMonitor(results, stems) as monitor:` ... `monitor.written_at[stem]`."""

    def __init__(self, results: Path, stems: set[str]) -> None:
        self.results = results
        self.written_at: dict[str, float] = {}
        results.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(_ResultEvents(stems, self.written_at), str(results), recursive=False)

    def __enter__(self) -> ResultMonitor:
        self._observer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)  # let the last events arrive
        self._observer.stop()
        self._observer.join(timeout=5)
