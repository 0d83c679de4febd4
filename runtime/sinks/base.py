"""Sink interfaces: per-image file writers and run-level tables refreshed from the journal."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.runtime.cells import CellAnalysis
from hep2edge.runtime.journal import Journal


@dataclass
class ImageOutput:
    """Everything a per-image sink may write: the result document, the stitched mask, the gray frame."""

    result: dict[str, Any]
    mask: np.ndarray  # (H, W) uint8 0/255
    gray: np.ndarray  # (H, W) uint8/uint16, what the model saw
    cells: CellAnalysis | None = None  # instance labels + per-cell records, where cells were analysed


class ImageSink(ABC):
    """Writes files for one image into RESULTS, atomically (temporary name, then rename)."""

    name = "image-sink"

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)

    @abstractmethod
    def files(self, stem: str) -> list[Path]:
        """The files `write` produces for `stem`."""

    @abstractmethod
    def write(self, output: ImageOutput) -> None: ...


class TableSink(ABC):
    """Run-level output regenerated from the journal (never appended, so a crash leaves no duplicates)."""

    name = "table-sink"

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)

    @abstractmethod
    def refresh(self, journal: Journal) -> None: ...
