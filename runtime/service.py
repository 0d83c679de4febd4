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

from rich.console import Console
from rich.live import Live

from hep2edge.atomic import OutputWriteError
from hep2edge.imageio import CHANNEL_POLICIES
from hep2edge.runtime.backends import create_backend
from hep2edge.runtime.backends.base import Backend
from hep2edge.runtime.cells import cell_method
from hep2edge.runtime.executors import Executor, make_executor
from hep2edge.runtime.field import check_inference_mode
from hep2edge.runtime.journal import Journal
from hep2edge.runtime.pipeline import Pipeline
from hep2edge.runtime.preprocess import check_contract_channels
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

    def __init__(self, board: StatusBoard, console: Console, every_s: float = 30.0) -> None:
        self.board, self.console, self.every_s = board, console, every_s
        self._last = (0, 0)
        self._at = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        state = (self.board.processed, self.board.failed)
        if now - self._at >= self.every_s and state != self._last:
            self.console.print(self.board.render())
            self._last, self._at = state, now


@contextmanager
def stop_on_signals(stop: Callable[[], None], console: Console) -> Iterator[None]:
    """SIGINT/SIGTERM -> finish in-flight work, then return normally; a second signal exits at once, which the
    journal survives like a kill (unfinished inputs are taken up by the next start). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if received:
            console.print(f"[yellow]{name} again: exiting now; the next start takes up unfinished inputs[/yellow]")
            os._exit(128 + signum)
        received.append(signum)
        console.print(f"[yellow]{name}: stopping intake, finishing in-flight work "
                      f"(send it again to exit at once)[/yellow]")
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_service(config: RunConfig, make_source: Callable[[Journal], Source], console: Console) -> RunSummary:
    """Analyse everything the source yields into `config.out`, exactly once per content.

    The backend opens and its contract is checked first, so a model the runtime refuses leaves RESULTS as it was.
    """
    backend = create_backend(config.backend, config.backend_config())
    with backend:
        check_contract_channels(backend.contract)
        check_inference_mode(config.inference, backend.contract, str(config.model))
        cell_method(config.stage.cells, backend.contract, str(config.model))
        CHANNEL_POLICIES.get(config.channel_policy(backend.contract))
        journal = Journal(config.out, {"command": config.command, "model": str(config.model), **config.source})
        try:  # the journal locks RESULTS against a second run
            removed = clean_temporaries(config.out)
            if removed:
                console.print(f"removed {removed} temporary file(s) left by an interrupted run")
            write_resolved_config(config.out, config)
            return _run(config, backend, make_source, console, journal)
        finally:
            journal.close()


def _prepare(config: RunConfig, console: Console, journal: Journal) -> int:
    """Before intake: recover what a killed run left, finish specimen verdicts, re-queue failures if asked."""
    recovered = recover(journal, config.out)
    if recovered:
        console.print(f"recovered {recovered} complete result(s) an interrupted run had not journaled")
    for specimen in all_specimens(journal):  # groups completed just before a crash get their verdict
        update_specimen(journal, config.specimens, specimen)
    TABLE_SINKS.get("csv")(config.out).refresh(journal)  # results.csv matches the journal from the start
    if config.retry_failed:
        console.print(f"--retry-failed: {len(journal.requeue_failed())} failed input(s) queued again")
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


def _run(config: RunConfig, backend: Backend, make_source: Callable[[Journal], Source], console: Console,
         journal: Journal) -> RunSummary:
    recovered = _prepare(config, console, journal)
    description = backend.describe()
    console.print(f"backend: {description}; channel policy: {config.channel_policy(backend.contract)}")
    executor = make_executor(backend, config.preprocess, config.inference)
    stats, board = StageStats(), StatusBoard()
    source = make_source(journal)
    console.print(f"source: {source.describe()}; results: {config.out}")
    pipeline = _build_pipeline(config, backend, executor, source, journal, stats, board)
    live = Live(board, console=console, refresh_per_second=4) if console.is_terminal else nullcontext()
    tick = None if console.is_terminal else PlainStatus(board, console)
    try:
        with stop_on_signals(pipeline.request_stop, console), live:
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
