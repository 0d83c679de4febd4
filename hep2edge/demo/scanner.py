"""A stand-in for the microscope's scanner software: drops image files into a folder one by one.

Each file is copied under a hidden temporary name and renamed into place, which is how acquisition
software publishes a finished field (and what `hep2edge watch` treats as a completed file).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from hep2edge.runtime.sources.base import Emit, Source


class ScannerDrop:
    """Copies `images` into `inbox`, one every `interval_s`, on a background thread; records landing times."""

    def __init__(self, images: list[Path], inbox: Path, interval_s: float, start_delay_s: float = 0.5) -> None:
        self.images = images
        self.inbox = inbox
        self.interval_s = interval_s
        self.start_delay_s = start_delay_s
        self.landed: dict[str, float] = {}  # file name -> time.time() of the rename
        self.error: BaseException | None = None
        self.failed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)

    def start(self) -> ScannerDrop:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if self._stop.wait(self.start_delay_s):
                return
            for image in self.images:
                partial = self.inbox / f".{image.name}.part"
                shutil.copyfile(image, partial)
                os.replace(partial, self.inbox / image.name)
                self.landed[image.name] = time.time()
                if self._stop.wait(self.interval_s):
                    return
        except OSError as exc:
            self.error = exc
            self.failed.set()

    def stop(self) -> None:
        """Stop dropping (after the file in hand) and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=30)


class ScannerFedSource(Source):
    """A folder watcher fed by a ScannerDrop; ends early if the scanner fails (else it would wait forever)."""

    name = "watch"

    def __init__(self, watcher: Source, scanner: ScannerDrop) -> None:
        super().__init__()
        self.watcher, self.scanner = watcher, scanner
        self.finite = True

    def describe(self) -> str:
        return self.watcher.describe()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        inner = threading.Event()

        def relay() -> None:
            while not inner.is_set():
                if stop.wait(0.1) or self.scanner.failed.is_set():
                    inner.set()

        thread = threading.Thread(target=relay, name="scanner-relay", daemon=True)
        thread.start()
        try:
            self.watcher.run(emit, inner)
        finally:
            inner.set()
            thread.join()
