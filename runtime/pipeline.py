"""The streaming pipeline: overlapping stages joined by bounded queues, so memory stays flat.

    source thread -> [intake] -> reader pool (read, hash, claim, decode, numpy tiles) -> [ready]
      -> one GPU thread (batches filled across frames, up to the backend's max batch) -> [done]
      -> writer threads (stitch, sinks, journal commit, specimen verdicts)
    and a tables thread: results.csv / specimens.csv at most every `table_interval_s`, always after the last commit

Several writers keep a fast GPU fed: mask stitching, PNG encoding and fsync release the GIL, and the journal
serialises its own commits. Results may land out of arrival order; each one is still complete or absent.

`request_stop()` (SIGINT/SIGTERM) stops intake; every frame already claimed is finished and written.
A fatal error (RESULTS unwritable, backend failure) aborts: intake stops, nothing done is lost, and
`run()` re-raises it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from hep2edge.atomic import OutputWriteError
from hep2edge.errors import ContractError
from hep2edge.runtime.executors import Chunk, Executor
from hep2edge.runtime.heap import release_free_memory
from hep2edge.runtime.journal import Journal
from hep2edge.runtime.settings import PipelineConfig
from hep2edge.runtime.sinks import TableSink
from hep2edge.runtime.sources import Item, Source
from hep2edge.runtime.stage_timings import StageStats
from hep2edge.runtime.stages import Frame, Reader, Writer
from hep2edge.runtime.status import StatusBoard

log = logging.getLogger(__name__)
T = TypeVar("T")
END = object()  # end-of-stream marker passed down the queues
POLL_S = 0.1


class Pipeline:
    """Wires a source, the reader/writer stages and an executor; `run()` blocks until done or stopped."""

    def __init__(self, config: PipelineConfig, source: Source, reader: Reader, executor: Executor, writer: Writer,
                 journal: Journal, tables: list[TableSink], stats: StageStats, board: StatusBoard) -> None:
        self.config, self.source, self.reader, self.executor, self.writer = config, source, reader, executor, writer
        self.journal, self.tables, self.stats, self.board = journal, tables, stats, board
        self.intake: queue.Queue[Any] = queue.Queue(config.queue_size)
        self.ready: queue.Queue[Any] = queue.Queue(config.queue_size)
        self.done: queue.Queue[Any] = queue.Queue(config.queue_size)
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self.stop_requested = False
        self._serial = itertools.count()
        self._readers_left = config.readers
        self._writers_left = config.writers
        self._reading = 0  # readers between taking an item and handing its frame on
        self._lock = threading.Lock()
        self._tables_lock = threading.Lock()
        self._tables_at = 0.0
        self._tables_cost = 0.0  # seconds the last regeneration took
        self._tables_dirty = threading.Event()  # a result was committed since the tables were last regenerated
        self._writers_done = threading.Event()

    # --- plumbing -------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_requested = True
        self.stop.set()

    def _fatal(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.abort.set()
        self.stop.set()
        self.reader.cancelled.set()

    def _put(self, target: queue.Queue[Any], value: object) -> bool:
        while not self.abort.is_set():
            try:
                target.put(value, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, source: queue.Queue[Any]) -> Any:
        while not self.abort.is_set():
            try:
                return source.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return END

    def _isolated(self, key: str, work: Callable[[], T], content_hash: str | None = None) -> T | None:
        """Run one input's work; an unexpected error fails that input only (output errors stay fatal)."""
        try:
            return work()
        except (OutputWriteError, ContractError):
            raise
        except Exception as exc:  # a bug or an exotic file must not stop a days-long watch
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            reason = f"{key}: unexpected {exc.__class__.__name__}{': ' + detail if detail else ''}"
            log.exception("%s", reason)
            self.journal.fail(key, content_hash, reason)
            self.board.fail(key, reason)
            return None

    def _update_queued(self) -> None:
        self.board.queued = self.intake.qsize() + self.ready.qsize() + self.done.qsize()
        self.board.dropped = self.source.dropped

    # --- stages ---------------------------------------------------------------------------------------------
    def _emit(self, item: Item) -> bool:
        if self.stop.is_set():
            return False
        if item.path is not None:
            self.journal.note_queued(item.key)
        return self._put(self.intake, (item, time.perf_counter()))

    def _source_loop(self) -> None:
        try:
            self.source.run(self._emit, self.stop)
        except BaseException as exc:  # reported by run()
            self._fatal(exc)
        finally:
            for _ in range(self.config.readers):
                self._put(self.intake, END)

    def _reader_loop(self) -> None:
        try:
            while (entry := self._get(self.intake)) is not END:
                if self.stop.is_set():
                    continue  # not claimed yet: stays `queued` in the journal for the next run
                item, started = entry
                with self._lock:
                    self._reading += 1
                try:
                    frame = self._isolated(item.key, partial(self.reader.read, item, next(self._serial), started))
                    if frame is not None:
                        frame.queued_at = time.perf_counter()
                        self._put(self.ready, frame)
                finally:
                    with self._lock:
                        self._reading -= 1
        except BaseException as exc:
            self._fatal(exc)
        finally:
            with self._lock:
                self._readers_left -= 1
                last = self._readers_left == 0
            if last:
                self._put(self.ready, END)

    def _next_chunks(self, pending: deque[tuple[Frame, int]]) -> list[tuple[Frame, Chunk]]:
        """Tiles for one batch, taken in order from the waiting frames (a frame may span two batches);
        for an executor of whole frames, the next frame."""
        if self.executor.whole_frames:
            frame, _ = pending.popleft()
            return [(frame, Chunk(frame.serial, frame.gray, frame.grid, 0, len(frame.grid), frame.tiles, frame.field))]
        room, chunks = self.executor_batch, []
        while pending and room:
            frame, start = pending[0]
            stop = min(len(frame.grid), start + room)
            tiles = frame.tiles[start:stop] if frame.tiles is not None else None
            chunks.append((frame, Chunk(frame.serial, frame.gray, frame.grid, start, stop, tiles)))
            room -= stop - start
            if stop == len(frame.grid):
                pending.popleft()
            else:
                pending[0] = (frame, stop)
        return chunks

    def _take(self, pending: deque[tuple[Frame, int]], block: bool) -> bool:
        """Move one frame from `ready` to `pending`; False at the end of the stream."""
        try:
            frame = self._get(self.ready) if block else self.ready.get(timeout=self.config.batch_wait_ms / 1000)
        except queue.Empty:
            return True
        if frame is END:
            return False
        frame.timings["queue"] = (time.perf_counter() - frame.queued_at) * 1000
        self.stats.add("queue", frame.timings["queue"])
        pending.append((frame, 0))
        return True

    def _frames_coming(self) -> bool:
        """Whether another frame may reach `ready` soon: worth waiting `batch_wait_ms` for (else a lone image
        would wait for nothing)."""
        return self._reading > 0 or not self.intake.empty()

    def _tiles_waiting(self, pending: deque[tuple[Frame, int]]) -> int:
        return sum(len(frame.grid) - start for frame, start in pending)

    def _gpu_loop(self) -> None:
        pending: deque[tuple[Frame, int]] = deque()
        more = True
        try:
            while (more or pending) and not self.abort.is_set():
                if more and not pending:
                    more = self._take(pending, block=True)
                while more and self._tiles_waiting(pending) < self.executor_batch and not self.ready.empty():
                    more = self._take(pending, block=False)
                if more and self._tiles_waiting(pending) < self.executor_batch and self._frames_coming():
                    more = self._take(pending, block=False)  # a short wait lets a batch fill across images
                if pending and not self.abort.is_set():
                    self._run_batch(self._next_chunks(pending))
        except BaseException as exc:
            self._fatal(exc)
        finally:
            for _ in range(self.config.writers):
                self._put(self.done, END)

    def _run_batch(self, chunks: list[tuple[Frame, Chunk]]) -> None:
        start = time.perf_counter()
        parts = self.executor.run([chunk for _, chunk in chunks])
        elapsed = (time.perf_counter() - start) * 1000
        self.stats.add("infer", elapsed)
        total = sum(chunk.size for _, chunk in chunks)
        for (frame, chunk), part in zip(chunks, parts):
            frame.parts.append(part)
            frame.received += chunk.size
            frame.timings["infer"] = frame.timings.get("infer", 0.0) + elapsed * chunk.size / total
            if frame.complete:
                self._put(self.done, frame)

    def _writer_loop(self) -> None:
        try:
            while (frame := self._get(self.done)) is not END:
                try:
                    self._isolated(frame.item.key, partial(self.writer.write, frame), frame.content_hash)
                finally:
                    self.reader.budget.release(frame.reserved)
                self._tables_dirty.set()
            with self._lock:
                self._writers_left -= 1
                last = self._writers_left == 0
            if last:
                self._writers_done.set()
                if not self.abort.is_set():
                    self._refresh_tables()
        except BaseException as exc:
            self._fatal(exc)

    def _tables_loop(self) -> None:
        """Regenerate the tables after commits: at most every `table_interval_s`, and after the last one of a
        burst too (trailing edge), so results.csv matches the journal while the watcher is idle."""
        try:
            while not self._writers_done.is_set() and not self.abort.is_set():
                if not self._tables_dirty.wait(POLL_S):
                    continue
                gap = max(self.config.table_interval_s, self._tables_cost / self.config.table_cost_share)
                wait = self._tables_at + gap - time.monotonic()
                if wait > 0 and self._writers_done.wait(wait):
                    return  # the last writer regenerates them
                self._refresh_tables()
        except BaseException as exc:
            self._fatal(exc)

    def _refresh_tables(self) -> None:
        with self._tables_lock:
            self._tables_dirty.clear()
            started = time.monotonic()
            for table in self.tables:
                table.refresh(self.journal)
            release_free_memory()  # the regeneration's temporaries would otherwise stay in the thread's arena
            self._tables_at = time.monotonic()
            self._tables_cost = self._tables_at - started

    # --- running --------------------------------------------------------------------------------------------
    @property
    def executor_batch(self) -> int:
        """Tiles one executor call takes (one frame for whole-field inference: nothing to wait for)."""
        return 1 if self.executor.whole_frames else self.config.max_batch

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._source_loop, name="source", daemon=True)]
        threads += [threading.Thread(target=self._reader_loop, name=f"reader-{i}", daemon=True)
                    for i in range(self.config.readers)]
        threads.append(threading.Thread(target=self._gpu_loop, name="gpu", daemon=True))
        threads.append(threading.Thread(target=self._tables_loop, name="tables", daemon=True))
        threads += [threading.Thread(target=self._writer_loop, name=f"writer-{i}", daemon=True)
                    for i in range(self.config.writers)]
        for thread in threads:
            thread.start()
        return threads

    def run(self, tick: Callable[[], None] | None = None) -> None:
        """Run until the source ends (or stop/abort) and every claimed frame is written; `tick()` each poll."""
        threads = self.start()
        writers = threads[-self.config.writers:]
        while alive := [writer for writer in writers if writer.is_alive()]:
            alive[0].join(POLL_S)
            self._update_queued()
            if tick is not None:
                tick()
        self.stop.set()
        for thread in threads:
            thread.join(timeout=10)
        self._update_queued()
        if self.error is not None:
            raise self.error
