"""What happens to one input on either side of the GPU: read + hash + claim + decode (+ numpy tiles), and
stitch + result document + sinks + journal commit. The threads that run these live in pipeline.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from hep2edge.cell_kernels import cell_kernels
from hep2edge.contract import ModelContract
from hep2edge.errors import ImageReadError, IncompleteImageError
from hep2edge.imageio import decode_image
from hep2edge.instances import InstanceParams
from hep2edge.regular_file import FileBytes, OversizeFileError, read_regular_file
from hep2edge.runtime.cells import CellAnalysis, analyse_cells, cell_method, full_dense
from hep2edge.runtime.field import field_input, field_problem
from hep2edge.runtime.inflight import InflightBudget, decode_estimate
from hep2edge.runtime.journal import Journal
from hep2edge.runtime.preprocess import (
    check_frame_size,
    frame_grid,
    frame_to_batch,
    full_mask,
    to_gray,
)
from hep2edge.runtime.results import ImageFacts, ModelInfo, TileOutputs, image_result, result_row
from hep2edge.runtime.settings import SpecimenConfig, StageConfig
from hep2edge.runtime.sinks import ImageOutput, ImageSink
from hep2edge.runtime.sources.base import Item
from hep2edge.runtime.specimens import update_specimen
from hep2edge.runtime.stage_timings import StageStats
from hep2edge.runtime.status import StatusBoard
from hep2edge.tiling import TileGrid

log = logging.getLogger(__name__)
INCOMPLETE_GRACE_S = 60.0  # a truncated file modified this recently may still be arriving: read it again later


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
    reserved: int = 0  # bytes held in the reader's in-flight budget until the writer is done
    field: bool = False  # `tiles` holds the whole-field input (`inference` field)

    @property
    def complete(self) -> bool:
        return self.received == len(self.grid)

    def outputs(self) -> TileOutputs:
        if len(self.parts) == 1:
            return self.parts[0]
        return TileOutputs(mask=np.concatenate([p.mask for p in self.parts if p.mask is not None]),
                           pattern=np.concatenate([p.pattern for p in self.parts]),
                           intensity=np.concatenate([p.intensity for p in self.parts]),
                           dense={name: np.concatenate([p.dense[name] for p in self.parts])
                                  for name in self.parts[0].dense})


class Reader:
    """Reader-thread work: bytes (read once) -> content hash -> journal claim -> gray frame (-> normalised tiles)."""

    def __init__(self, config: StageConfig, contract: ModelContract, journal: Journal, stats: StageStats,
                 board: StatusBoard, tiles_on_host: bool, inference: str = "tiles",
                 largest_field: tuple[int, int] | None = None) -> None:
        self.config, self.contract, self.journal = config, contract, journal
        self.stats, self.board, self.tiles_on_host = stats, board, tiles_on_host
        self.inference, self.largest_field = inference, largest_field
        self.budget = InflightBudget(config.max_inflight_bytes)
        self.cancelled = threading.Event()  # the pipeline aborted: stop waiting for budget

    def _fail(self, item: Item, content_hash: str | None, reason: str) -> None:
        self.journal.fail(item.key, content_hash, reason)
        self.board.fail(item.key, reason)
        log.warning("%s", reason)

    def _incomplete(self, item: Item, blob: FileBytes, content_hash: str, reason: str) -> bool:
        """A truncated file written to moments ago is read again later (not a failure); True if so."""
        assert item.path is not None
        if item.retry is None or time.time() - blob.mtime_ns / 1e9 > INCOMPLETE_GRACE_S:
            return False
        self.journal.wait(item.key, content_hash, reason)
        self.board.count("waiting")
        log.info("%s; waiting for the rest of the file", reason)
        item.retry()
        return True

    def _refuse(self, item: Item, exc: OversizeFileError) -> None:
        """An oversize file is remembered by its (streamed) hash, so it is skipped as failed until it changes."""
        claim = self.journal.claim(item.key, exc.content_hash, item.name, self.config.retry_failed)
        if claim.action == "analyse":
            self._fail(item, exc.content_hash, str(exc))
        else:
            self.board.count("duplicates" if claim.action == "duplicate" else "skipped_failed")

    def _load(self, item: Item) -> tuple[bytes, FileBytes | None]:
        """The bytes to hash and decode: the file's (read once, regular files only) or the captured frame's."""
        if item.path is not None:
            blob = read_regular_file(item.path, self.config.max_file_bytes, item.within)
            return blob.data, blob
        assert item.frame is not None
        return np.ascontiguousarray(item.frame).tobytes(), None

    def _decode(self, item: Item, data: bytes) -> np.ndarray:
        if item.path is not None:
            gray = decode_image(data, item.path, self.config.channel_policy, self.config.max_pixels)
        else:
            assert item.frame is not None
            gray = to_gray(item.frame, self.config.channel_policy, item.key)
        check_frame_size(gray, self.contract, item.key)
        return gray

    def read(self, item: Item, serial: int, started: float) -> Frame | None:
        """The frame to analyse, or None (already analysed, failed before, unreadable or incomplete: journaled)."""
        timings: dict[str, float] = {}
        content_hash, reserved, blob = None, 0, None
        try:
            with self.stats.time("read", timings):
                data, blob = self._load(item)
                content_hash = hashlib.sha256(data).hexdigest()
            if not self.budget.reserve(estimate := decode_estimate(data), self.cancelled):
                return None  # aborting; not claimed, so it stays queued for the next run
            reserved = estimate
            signature = blob.signature if blob is not None else None
            claim = self.journal.claim(item.key, content_hash, item.name, self.config.retry_failed, signature)
            if claim.action != "analyse":
                self.board.count("duplicates" if claim.action == "duplicate" else "skipped_failed")
                self.budget.release(reserved)
                return None
            with self.stats.time("decode", timings):
                gray = self._decode(item, data)
        except OversizeFileError as exc:
            self._refuse(item, exc)
            return None
        except IncompleteImageError as exc:
            self.budget.release(reserved)
            if blob is None or content_hash is None or not self._incomplete(item, blob, content_hash, str(exc)):
                self._fail(item, content_hash, str(exc))
            return None
        except ImageReadError as exc:
            self.budget.release(reserved)
            self._fail(item, content_hash, str(exc))
            return None
        except BaseException:
            self.budget.release(reserved)
            raise
        with self.stats.time("preprocess", timings):
            tiles, grid, whole = self._network_input(item, gray)
        kept = gray.nbytes + (tiles.nbytes if tiles is not None else 0)
        self.budget.resize(reserved, kept)
        return Frame(serial, item, content_hash, claim.stem, gray, grid, tiles, started, timings, reserved=kept,
                     field=whole)

    def _network_input(self, item: Item, gray: np.ndarray) -> tuple[np.ndarray | None, TileGrid, bool]:
        """(normalised tiles, or the whole-field input, or None when the GPU cuts them; the grid; whole field?)."""
        grid = frame_grid(gray, self.contract, self.config.tile_overlap)
        if self.inference == "field":
            problem = field_problem(grid.height, grid.width, self.contract, self.largest_field)
            if problem is None:
                return (field_input(gray, self.contract) if self.tiles_on_host else None), grid, True
            log.warning("%s: %s; analysed in tiles", item.key, problem)
        if self.tiles_on_host:
            return frame_to_batch(gray, self.contract, self.config.tile_overlap)[0], grid, False
        return None, grid, False


class Writer:
    """Writer-thread work: stitch, result document, sink files (atomic), then one journal transaction."""

    def __init__(self, config: StageConfig, contract: ModelContract, model: ModelInfo, journal: Journal,
                 sinks: list[ImageSink], specimens: SpecimenConfig, stats: StageStats, board: StatusBoard) -> None:
        self.config, self.contract, self.model, self.journal = config, contract, model, journal
        self.sinks, self.specimens, self.stats, self.board = sinks, specimens, stats, board
        self.cell_method = cell_method(config.cells, contract, model.file)
        self.instance_params = InstanceParams.from_dict(contract.instances)
        self.kernels = None if self.cell_method is None else cell_kernels(config.cell_kernels)  # numba if needed
        if self.kernels is not None:
            self.kernels.warm_up()  # before the first field, not on it

    def _cells(self, outputs: TileOutputs, frame: Frame, mask: np.ndarray) -> CellAnalysis | None:
        if self.cell_method is None or self.kernels is None:
            return None
        with self.stats.time("cells", frame.timings):
            dense = full_dense(outputs, frame.grid)
            return analyse_cells(self.cell_method, mask, dense, frame.gray, self.instance_params, self.kernels)

    def write(self, frame: Frame) -> None:
        outputs = frame.outputs()
        with self.stats.time("stitch", frame.timings):
            mask, foreground = full_mask(outputs, frame.grid, self.config.stitch)
        cells = self._cells(outputs, frame, mask)
        specimen = self.specimens.specimen_of(frame.item.name)
        frame.timings["total"] = (time.perf_counter() - frame.started) * 1000
        facts = ImageFacts(frame.item.key, frame.content_hash, frame.stem, specimen, frame.grid.height,
                           frame.grid.width, str(frame.gray.dtype), frame.timings)
        section = cells.section("pattern_map" in self.contract.cell_outputs) if cells is not None else None
        model = self.model if frame.field or self.model.inference == "tiles" else replace(self.model, inference="tiles")
        result = image_result(facts, outputs, frame.grid, mask, foreground, model, self.contract, section)
        with self.stats.time("write"):
            for sink in self.sinks:
                sink.write(ImageOutput(result, mask, frame.gray, cells))
        with self.stats.time("journal"):
            self.journal.complete(frame.item.key, result_row(result))
        update_specimen(self.journal, self.specimens, specimen)
        latency = (time.perf_counter() - frame.started) * 1000
        self.stats.add("end_to_end", latency)
        self.board.done(latency, f"{frame.stem}: {result['pattern']['top']} {result['pattern']['probability']:.2f}, "
                                 f"{result['intensity']['class']}")
