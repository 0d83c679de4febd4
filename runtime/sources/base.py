"""The source interface: something that yields inputs (files or in-memory frames) until it ends or is stopped."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hep2edge.data.manifest import LABELS_SUFFIX, MASK_SUFFIX

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
COMPANION_SUFFIXES = (MASK_SUFFIX.lower(), LABELS_SUFFIX.lower())  # a dataset's masks and labels are not fields
TEMPORARY_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".swp", ".lock", "~")


@dataclass
class Item:
    """One input: a file (`path`) or a captured frame (`frame`, RGB or gray). `key` identifies it in the journal."""

    key: str
    name: str
    path: Path | None = None
    frame: np.ndarray | None = None
    within: Path | None = None  # a watched folder the file must really lie in (None: a file the user named)
    retry: Callable[[], None] | None = None  # read it again later (a watcher, for a file still being written)


Emit = Callable[[Item], bool]  # returns False once the pipeline stops accepting input


class Source(ABC):
    """Yields items through `emit` until exhausted (file lists) or until `stop` is set (watchers, cameras)."""

    name = "source"
    finite = True

    def __init__(self) -> None:
        self.dropped = 0  # inputs discarded because the pipeline was behind (cameras only)

    @abstractmethod
    def run(self, emit: Emit, stop: threading.Event) -> None: ...

    def describe(self) -> str:
        return self.name


def is_candidate(path: Path, root: Path | None = None) -> bool:
    """An image file name that is neither hidden, temporary nor a mask (relative to `root` when given)."""
    parts = path.relative_to(root).parts if root is not None and path.is_relative_to(root) else (path.name,)
    if any(part.startswith(".") for part in parts):
        return False
    name = path.name.lower()
    if name.endswith(TEMPORARY_SUFFIXES) or name.startswith("~$"):
        return False
    if path.stem.lower().endswith(COMPANION_SUFFIXES):  # `{stem}_Mask.tif`, `{stem}_Labels.tif`
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES
