"""Sinks, chosen by name: per-image files (`json` = result JSON + mask PNG, `overlay`, `instances` = 16-bit
instance labels) and run tables (`csv`).

The SQLite database `results.db` is the journal itself (runtime/journal.py): its results row is written in
the same transaction that marks the input done.
"""

from __future__ import annotations

from hep2edge.registry import Registry
from hep2edge.runtime.sinks.base import ImageOutput, ImageSink, TableSink
from hep2edge.runtime.sinks.files import InstanceLabelSink, JsonMaskSink, OverlaySink
from hep2edge.runtime.sinks.tables import CsvSink

IMAGE_SINKS: Registry[type[ImageSink]] = Registry("image sink")
IMAGE_SINKS.add("json", JsonMaskSink)
IMAGE_SINKS.add("overlay", OverlaySink)
IMAGE_SINKS.add("instances", InstanceLabelSink)

TABLE_SINKS: Registry[type[TableSink]] = Registry("table sink")
TABLE_SINKS.add("csv", CsvSink)

__all__ = ["IMAGE_SINKS", "TABLE_SINKS", "ImageOutput", "ImageSink", "TableSink"]
