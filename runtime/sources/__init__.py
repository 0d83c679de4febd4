"""Sources, chosen by name: `files` (paths, folders, globs), `watch` (a folder, until stopped), `camera`."""

from __future__ import annotations

from hep2edge.registry import Registry
from hep2edge.runtime.sources.base import IMAGE_SUFFIXES, Item, Source, is_candidate
from hep2edge.runtime.sources.camera import CameraSource
from hep2edge.runtime.sources.files import FileListSource
from hep2edge.runtime.sources.watch import FolderWatchSource

SOURCES: Registry[type[Source]] = Registry("source")
SOURCES.add("files", FileListSource)
SOURCES.add("watch", FolderWatchSource)
SOURCES.add("camera", CameraSource)

__all__ = ["IMAGE_SUFFIXES", "SOURCES", "Item", "Source", "is_candidate"]
