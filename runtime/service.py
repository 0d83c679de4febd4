"""`run_service`: the one library call behind `analyze`, `watch` and `camera`.

Opens RESULTS and its journal, recovers what a killed run left (complete results not yet journaled,
inputs queued but never finished, stale temporary files), opens the backend, runs the pipeline with a live
status line and clean SIGINT/SIGTERM handling, and returns a summary.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from hep2edge.atomic import OutputWriteError
from hep2edge.imageio import CHANNEL_POLICIES
from hep2edge.progress import SILENT, LiveReporter, Reporter
from hep2edge.runtime.backends import create_backend
from hep2edge.runtime.backends.base import Backend
from hep2edge.runtime.cells import cell_method
from hep2edge.runtime.executors import Executor, make_executor
from hep2edge.runtime.field import check_inference_mode, export_field_warning
from hep2edge.runtime.journal import Journal
from hep2edge.runtime.pipeline import Pipeline
from hep2edge.runtime.preprocess import check_contract_channels, check_tile_overlap
from hep2edge.runtime.results import ModelInfo, result_row
from hep2edge.runtime.settings import RunConfig
from hep2edge.runtime.sinks import IMAGE_SINKS, TABLE_SINKS
from hep2edge.runtime.sinks.files import read_complete_result
from hep2edge.runtime.sources import Source
from hep2edge.runtime.specimens import all_specimens, update_specimen
from hep2edge.runtime.stage_timings import StageStats
from hep2edge.runtime.stages import Reader, Writer
from hep2edge.runtime.status import StatusBoard
from hep2edge.workspace import write_resolved_config

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    out: Path
    backend: str
    processed: int
    duplicates: int
    failed: list[tuple[str, str]]
    skipped_failed: int
    dropped: int
    recovered: int
    stages: dict[str, dict[str, float]]
    interrupted: bool


def clean_temporaries(out: Path) -> int:
    """Remove `.<name>.<random>.tmp` files an earlier, killed run left (hep2edge.atomic's naming)."""
    removed = 0
    for path in out.glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def recover(journal: Journal, out: Path) -> int:
    """Journal results whose files are complete but whose commit a crash prevented; returns how many."""
    recovered = 0
    for path, content_hash, stem in journal.unfinished():
        if content_hash and stem and (result := read_complete_result(out, stem, content_hash)) is not None:
            journal.complete(path, result_row(result))
            recovered += 1
    return recovered


class PlainStatus:
    """Without a terminal (a service's log), print the status line every `every_s` seconds when it changed."""

    def __init__(self, board: StatusBoard, reporter: Reporter, every_s: float = 30.0) -> None:
        self.board, self.reporter, self.every_s = board, reporter, every_s
        self._last = (0, 0)
        self._at = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        state = (self.board.processed, self.board.failed)
        if now - self._at >= self.every_s and state != self._last:
            self.reporter.say(self.board.render().plain)
            self._last, self._at = state, now


@contextmanager
def stop_on_signals(stop: Callable[[], None], reporter: Reporter) -> Iterator[None]:
    """SIGINT/SIGTERM -> finish in-flight work, then return normally; a second signal exits at once, which the
    journal survives like a kill (unfinished inputs are taken up by the next start). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if received:
            reporter.say(f"{name} again: exiting now; the next start takes up unfinished inputs")
            os._exit(128 + signum)
        received.append(signum)
        reporter.say(f"{name}: stopping intake, finishing in-flight work (send it again to exit at once)")
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_service(config: RunConfig, make_source: Callable[[Journal], Source],
                reporter: Reporter = SILENT) -> RunSummary:
    """Analyse everything the source yields into `config.out`, exactly once per content, telling `reporter`.

    The backend opens and its contract is checked first, so a model the runtime refuses leaves RESULTS as it was.
    """
    backend = create_backend(config.backend, config.backend_config())
    with backend:
        check_contract_channels(backend.contract)
        check_inference_mode(config.inference, backend.contract, str(config.model))
        warning = export_field_warning(config.inference, Path(config.model))
        if warning:
            reporter.say(warning)
        check_tile_overlap(config.stage.tile_overlap, backend.contract)
        cell_method(config.stage.cells, backend.contract, str(config.model))
        CHANNEL_POLICIES.get(config.channel_policy(backend.contract))
        journal = Journal(config.out, {"command": config.command, "model": str(config.model), **config.source})
        try:  # the journal locks RESULTS against a second run
            removed = clean_temporaries(config.out)
            if removed:
                reporter.say(f"removed {removed} temporary file(s) left by an interrupted run")
            write_resolved_config(config.out, config)
            return _run(config, backend, make_source, reporter, journal)
        finally:
            journal.close()


def _prepare(config: RunConfig, reporter: Reporter, journal: Journal) -> int:
    """Before intake: recover what a killed run left, finish specimen verdicts, re-queue failures if asked."""
    recovered = recover(journal, config.out)
    if recovered:
        reporter.say(f"recovered {recovered} complete result(s) an interrupted run had not journaled")
    for specimen in all_specimens(journal):  # groups completed just before a crash get their verdict
        update_specimen(journal, config.specimens, specimen)
    TABLE_SINKS.get("csv")(config.out).refresh(journal)  # results.csv matches the journal from the start
    if config.retry_failed:
        reporter.say(f"--retry-failed: {len(journal.requeue_failed())} failed input(s) queued again")
    return recovered


def _finish(config: RunConfig, journal: Journal) -> None:
    """After the run: every specimen's verdict (incomplete groups marked so) and results.csv from the db."""
    for specimen in all_specimens(journal):
        update_specimen(journal, config.specimens, specimen, final=True)
    TABLE_SINKS.get("csv")(config.out).refresh(journal)


def _build_pipeline(config: RunConfig, backend: Backend, executor: Executor, source: Source, journal: Journal,
                    stats: StageStats, board: StatusBoard) -> Pipeline:
    """Reader, writer and sinks for this backend's contract, joined into one pipeline."""
    out, contract = config.out, backend.contract
    stage = replace(config.stage, channel_policy=config.channel_policy(contract),
                    retry_failed=config.retry_failed)
    model = ModelInfo(contract.model_id, backend.precision, backend.name, str(config.model), backend.device_name(),
                      config.inference)
    # the result JSON goes last: its presence means every file of the image is complete (crash recovery)
    optional = (("overlay", config.overlay), ("instances", config.instance_labels))
    sinks = [IMAGE_SINKS.get(name)(out) for name, wanted in optional if wanted] + [IMAGE_SINKS.get("json")(out)]
    return Pipeline(
        replace(config.pipeline, max_batch=backend.max_batch), source,
        Reader(stage, contract, journal, stats, board, executor.preprocess_on_host, config.inference,
               backend.largest_field), executor,
        Writer(stage, contract, model, journal, sinks, config.specimens, stats, board),
        journal, [TABLE_SINKS.get("csv")(out)], stats, board,
    )


def _run(config: RunConfig, backend: Backend, make_source: Callable[[Journal], Source], reporter: Reporter,
         journal: Journal) -> RunSummary:
    recovered = _prepare(config, reporter, journal)
    description = backend.describe()
    reporter.say(f"backend: {description}; channel policy: {config.channel_policy(backend.contract)}")
    executor = make_executor(backend, config.preprocess, config.inference)
    stats, board = StageStats(), StatusBoard()
    source = make_source(journal)
    reporter.say(f"source: {source.describe()}; results: {config.out}")
    pipeline = _build_pipeline(config, backend, executor, source, journal, stats, board)
    live = reporter.live(board) if isinstance(reporter, LiveReporter) else None
    tick = None if live is not None else PlainStatus(board, reporter)
    try:
        with stop_on_signals(pipeline.request_stop, reporter), live or nullcontext():
            pipeline.run(tick)
    except OutputWriteError as exc:
        raise OutputWriteError(
            f"{exc}; intake stopped, the {board.processed} result(s) written in this run are kept, "
            "fix RESULTS and run again to continue"
        ) from exc
    finally:
        executor.close()
    _finish(config, journal)
    return RunSummary(config.out, description, board.processed, board.duplicates, list(board.failures),
                      board.skipped_failed, source.dropped, recovered, stats.percentiles(),
                      interrupted=pipeline.stop_requested)
