"""What happens to one input on either side of the GPU: read + hash + claim + decode (+ numpy tiles), and
stitch + result document + sinks + journal commit. The threads that run these live in pipeline.py.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError, ImageReadError
from hep2edge.imageio import MAX_PIXELS, read_image
from hep2edge.runtime.journal import Journal
from hep2edge.runtime.preprocess import (
    MASK_STITCHERS,
    frame_grid,
    frame_to_batch,
    stitch_mask,
    tile_foreground,
    to_gray,
)
from hep2edge.runtime.results import ImageFacts, ModelInfo, TileOutputs, image_result, result_row
from hep2edge.runtime.sinks import ImageOutput, ImageSink
from hep2edge.runtime.sources.base import Item
from hep2edge.runtime.specimens import SpecimenConfig, update_specimen
from hep2edge.runtime.stats import StageStats
from hep2edge.runtime.status import StatusBoard
from hep2edge.tiling import TileGrid

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 1 << 30
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class StageConfig:
    """Per-input settings of the reader and writer stages."""

    channel_policy: str = "luminance"
    retry_failed: bool = False
    max_file_bytes: int = MAX_FILE_BYTES
    max_pixels: int = MAX_PIXELS
    stitch: str = "majority"

    def __post_init__(self) -> None:
        # checked here, before any input: found per image it would fail (and journal) every input
        if self.stitch not in MASK_STITCHERS:
            raise ConfigError(f"--stitch {self.stitch}: valid methods are {', '.join(MASK_STITCHERS)}")


@dataclass
class Frame:
    """One input on its way through the pipeline."""

    serial: int
    item: Item
    content_hash: str
    stem: str
    gray: np.ndarray
    grid: TileGrid
    tiles: np.ndarray | None
    started: float
    timings: dict[str, float] = field(default_factory=dict)
    queued_at: float = 0.0
    parts: list[TileOutputs] = field(default_factory=list)
    received: int = 0

    @property
    def complete(self) -> bool:
        return self.received == len(self.grid)

    def outputs(self) -> TileOutputs:
        return TileOutputs(mask=np.concatenate([p.mask for p in self.parts]),
                           pattern=np.concatenate([p.pattern for p in self.parts]),
                           intensity=np.concatenate([p.intensity for p in self.parts]))


class Reader:
    """Reader-thread work: bytes -> content hash -> journal claim -> gray frame (-> normalised tiles)."""

    def __init__(self, config: StageConfig, contract: ModelContract, journal: Journal, stats: StageStats,
                 board: StatusBoard, tiles_on_host: bool) -> None:
        self.config, self.contract, self.journal = config, contract, journal
        self.stats, self.board, self.tiles_on_host = stats, board, tiles_on_host

    def _fail(self, item: Item, content_hash: str | None, reason: str) -> None:
        self.journal.fail(item.key, content_hash, reason)
        self.board.fail(item.key, reason)
        log.warning("%s", reason)

    def _file_hash(self, path: Path) -> tuple[str, int]:
        """(sha256 of the file's bytes, size); streamed, so an absurdly large file costs no memory."""
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as handle:
                while block := handle.read(HASH_CHUNK):
                    digest.update(block)
                    size += len(block)
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        return digest.hexdigest(), size

    def read(self, item: Item, serial: int, started: float) -> Frame | None:
        """The frame to analyse, or None (already analysed, failed before, or unreadable: journaled)."""
        timings: dict[str, float] = {}
        content_hash = None
        try:
            size = 0
            with self.stats.time("read", timings):
                if item.path is not None:
                    content_hash, size = self._file_hash(item.path)
                else:
                    assert item.frame is not None
                    content_hash = hashlib.sha256(np.ascontiguousarray(item.frame).tobytes()).hexdigest()
            claim = self.journal.claim(item.key, content_hash, item.name, self.config.retry_failed)
            if claim.action != "analyse":
                self.board.count("duplicates" if claim.action == "duplicate" else "skipped_failed")
                return None
            if size > self.config.max_file_bytes:
                raise ImageReadError(
                    f"{item.path}: file is {size:,} bytes, over the limit of {self.config.max_file_bytes:,}"
                )
            with self.stats.time("decode", timings):
                if item.path is not None:
                    gray = read_image(item.path, self.config.channel_policy, self.config.max_pixels)
                else:
                    assert item.frame is not None
                    gray = to_gray(item.frame, self.config.channel_policy, item.key)
        except ImageReadError as exc:
            self._fail(item, content_hash, str(exc))
            return None
        tiles = None
        if self.tiles_on_host:
            with self.stats.time("preprocess", timings):
                tiles, grid = frame_to_batch(gray, self.contract)
        else:
            grid = frame_grid(gray, self.contract)
        return Frame(serial, item, content_hash, claim.stem, gray, grid, tiles, started, timings)


class Writer:
    """Writer-thread work: stitch, result document, sink files (atomic), then one journal transaction."""

    def __init__(self, config: StageConfig, contract: ModelContract, model: ModelInfo, journal: Journal,
                 sinks: list[ImageSink], specimens: SpecimenConfig, stats: StageStats, board: StatusBoard) -> None:
        self.config, self.contract, self.model, self.journal = config, contract, model, journal
        self.sinks, self.specimens, self.stats, self.board = sinks, specimens, stats, board

    def write(self, frame: Frame) -> None:
        outputs = frame.outputs()
        with self.stats.time("stitch", frame.timings):
            mask = stitch_mask(outputs.mask, frame.grid, self.config.stitch)
            foreground = tile_foreground(outputs.mask, frame.grid)
        specimen = self.specimens.specimen_of(frame.item.name)
        frame.timings["total"] = (time.perf_counter() - frame.started) * 1000
        facts = ImageFacts(frame.item.key, frame.content_hash, frame.stem, specimen, frame.grid.height,
                           frame.grid.width, str(frame.gray.dtype), frame.timings)
        result = image_result(facts, outputs, frame.grid, mask, foreground, self.model, self.contract)
        with self.stats.time("write"):
            for sink in self.sinks:
                sink.write(ImageOutput(result, mask, frame.gray))
        with self.stats.time("journal"):
            self.journal.complete(frame.item.key, result_row(result))
        update_specimen(self.journal, self.specimens, specimen)
        latency = (time.perf_counter() - frame.started) * 1000
        self.stats.add("end_to_end", latency)
        self.board.done(latency, f"{frame.stem}: {result['pattern']['top']} {result['pattern']['probability']:.2f}, "
                                 f"{result['intensity']['class']}")
