"""`hep2edge watch`, `hep2edge analyze`, `hep2edge camera`: thin commands over hep2edge.runtime.service."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hep2edge.cli.app import app, err_console
from hep2edge.cli.common import console, import_stage, show_resolved
from hep2edge.cli.runtime_options import (
    FILE_OPTIONS,
    MODEL_OPTIONS,
    OUTPUT_OPTIONS,
    PIPELINE_OPTIONS,
    defaults,
    shared_options,
)
from hep2edge.runtime.settings import (
    PipelineConfig,
    RunConfig,
    SpecimenConfig,
    StageConfig,
    check_backend_options,
    check_run_options,
)
from hep2edge.workspace import RUNS_DIR, resolve_out_dir


def _require(value: Any, what: str, key: str) -> Any:
    if value is None or value == []:
        err_console.print(f"[bold red]error:[/bold red] pass {what} or set {key} in hep2edge.yaml", highlight=False)
        raise typer.Exit(2)
    return value


def stable_watch_dir(folder: Path) -> Path:
    """runs/watch/<sanitised absolute folder path>: the same folder always gets the same RESULTS."""
    absolute = str(folder.resolve())
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", absolute).strip("_") or "root"
    if len(name) > 80:
        name = f"{name[-60:]}-{hashlib.sha256(absolute.encode()).hexdigest()[:8]}"
    return Path(RUNS_DIR) / "watch" / name


def _config(command: str, options: dict[str, Any], source: dict[str, Any]) -> Any:
    """Check the options and resolve the model, then RESULTS (so bad input leaves no empty run folder and no
    journal entry), and build the RunConfig."""
    select = import_stage("hep2edge.runtime.backends.select")
    check_run_options(options["device"], options["channel"], options["preprocess"], options["inference"])
    stage = StageConfig(max_file_bytes=options["max_file_mb"] << 20, stitch=options["stitch"],
                        max_inflight_bytes=options["max_inflight_mb"] << 20, cells=options["cells"],
                        cell_kernels=options["cell_kernels"], tile_overlap=options["tile_overlap"])
    specimens = SpecimenConfig(options["specimen_pattern"], options["specimen_images"], options["specimen_method"])
    chosen = select.select_model(options["model"], options["backend"])
    console.print(f"model: {chosen.model} -> backend {chosen.backend} ({chosen.reason})", highlight=False, markup=False)
    check_backend_options(chosen.backend, options["device"], options["torch_precision"],
                          options["channels_last"], options["precision_hint"])
    return RunConfig(
        command=command, out=resolve_out_dir(options["out"], command), model=chosen.model, backend=chosen.backend,
        model_reason=chosen.reason,
        device=options["device"], channel=options["channel"], preprocess=options["preprocess"],
        inference=options["inference"],
        cuda_graph=options["cuda_graph"], torch_precision=options["torch_precision"],
        channels_last=options["channels_last"], inference_precision=options["precision_hint"],
        overlay=options["overlay"], instance_labels=options["instance_labels"], retry_failed=options["retry_failed"],
        stage=stage,
        pipeline=PipelineConfig(readers=options["readers"], writers=options["writers"], queue_size=options["queue"],
                                max_batch=options["max_batch"]),
        specimens=specimens,
        source=source,
    )


def _run(config: Any, make_source: Any, show_stats: bool) -> Any:
    from hep2edge.cli.reporter import RichReporter
    from hep2edge.runtime.service import run_service

    if not logging.getLogger().handlers:
        # a long-running watcher logs each failure as it happens; analyze lists them in its summary
        level = logging.ERROR if config.command == "analyze" else logging.WARNING
        logging.basicConfig(level=level, format="warning: %(message)s")
    show_resolved(config.command, config)
    summary = run_service(config, make_source, RichReporter(console))
    _print_summary(summary)
    if show_stats:
        from hep2edge.runtime.stage_timings import percentile_table

        console.print(percentile_table(summary.stages))
    return summary


def _print_summary(summary: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.out}", show_header=False)
    rows = [("backend", summary.backend), ("analysed", summary.processed),
            ("already analysed (same content)", summary.duplicates), ("failed", len(summary.failed)),
            ("skipped (failed before)", summary.skipped_failed), ("recovered after a crash", summary.recovered)]
    if summary.dropped:
        rows.append(("frames dropped (behind)", summary.dropped))
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for _key, reason in summary.failed[:20]:
        err_console.print(f"[red]failed[/red] {escape(reason)}", highlight=False, soft_wrap=True)
    if len(summary.failed) > 20:
        err_console.print(f"... and {len(summary.failed) - 20} more (see results.db, table inputs)")


@app.command()
@shared_options(MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS, FILE_OPTIONS)
def analyze(
    paths: list[str] = typer.Argument(None, help="Image files, folders or glob patterns.", show_default=False),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folder inputs."),
    **options: Any,
) -> None:
    """Analyse files once and exit with a summary (exit 1 if any input failed, now or in an earlier run)."""
    specs = _require(paths, "PATH...", "analyze.paths")
    from hep2edge.runtime.sources.files import FileListSource, expand_inputs

    inputs = expand_inputs([str(p) for p in specs], recursive)
    config = _config("analyze", options, {"paths": list(specs)})
    summary = _run(config, lambda journal: FileListSource(inputs), options["stats"])
    if summary.failed or summary.skipped_failed:
        raise typer.Exit(1)


@app.command()
@shared_options(MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS, FILE_OPTIONS)
def watch(
    folder: Path = typer.Argument(None, help="Folder the scanner writes into.", show_default=False),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Watch sub-folders too."),
    poll: bool = typer.Option(False, "--poll", help="Poll instead of inotify (network shares)."),
    poll_interval: float = typer.Option(1.0, "--poll-interval", min=0.05, help="Seconds between polls."),
    settle: int = typer.Option(1000, "--settle", min=0, help="ms a file's size and mtime must stay the same."),
    existing: bool = typer.Option(False, "--existing", help="First watch of a folder: also analyse the files "
                                  "already in it (a restart always analyses whatever the journal has no result "
                                  "for, whatever its age)."),
    max_files: int = typer.Option(0, "--max-files", min=0, help="Exit after this many files were taken in "
                                  "and written (0: run until SIGINT/SIGTERM)."),
    **options: Any,
) -> None:
    """Analyse every image that appears in FOLDER until SIGINT/SIGTERM (then finish in-flight work, exit 0).

    RESULTS (--out) defaults to runs/watch/<folder name>, the same on every restart."""
    root = Path(_require(folder, "FOLDER", "watch.folder"))
    from hep2edge.runtime.sources.watch import WatchConfig
    from hep2edge.runtime.watch_restart import restart_source

    watch_config = WatchConfig(root, recursive, poll, poll_interval, settle, existing, max_files)
    if options["out"] is None:
        options["out"] = stable_watch_dir(root)
        console.print(f"results: {options['out']} (stable for {root}; pass --out to choose)", highlight=False,
                      markup=False)
    config = _config("watch", options, {"folder": str(root)})

    def make_source(journal: Any) -> Any:
        source = restart_source(journal, watch_config)
        if source.first:
            console.print(f"restart: {len(source.first)} unfinished file(s) queued first", highlight=False)
        return source

    _run(config, make_source, options["stats"])


@app.command()
@shared_options(MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS)
def camera(
    source: str = typer.Argument(None, help="Device index, stream URL or video file.", show_default=False),
    fps: float = typer.Option(2.0, "--fps", help="Frames analysed per second (stream time for files)."),
    buffer: int = typer.Option(2, "--buffer", min=1, help="Frames kept waiting; the oldest is dropped when behind."),
    max_frames: int = typer.Option(0, "--max-frames", min=0, help="Stop after this many sampled frames (0: never)."),
    **options: Any,
) -> None:
    """Analyse camera or video frames at --fps until the stream ends or SIGINT/SIGTERM."""
    options = {**defaults(FILE_OPTIONS), **options}  # frames are not files: the file options keep their defaults
    spec = str(_require(source, "SOURCE", "camera.source"))
    from hep2edge.runtime.sources.camera import CameraConfig, CameraSource

    camera_config = CameraConfig(spec, fps, buffer, max_frames)
    config = _config("camera", options, {"camera": spec, "fps": fps})
    _run(config, lambda journal: CameraSource(camera_config), options["stats"])
