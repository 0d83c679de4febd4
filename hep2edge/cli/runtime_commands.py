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
from hep2edge.runtime.cells import CELL_MODES
from hep2edge.runtime.field import INFERENCE_MODES
from hep2edge.runtime.specimens import METHODS as SPECIMEN_METHODS
from hep2edge.workspace import RUNS_DIR, resolve_out_dir

MODEL = typer.Option(None, "--model", "-m", help="Engine, ONNX, checkpoint or export folder "
                     "(default: the newest runs/export/<n>).")
OUT = typer.Option(None, "--out", "-o", help="RESULTS folder.")
BACKEND = typer.Option("auto", "--backend", help="auto | tensorrt | onnxruntime | openvino | torch.")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda (| gpu | npu: Intel, OpenVINO).")
CHANNEL = typer.Option(None, "--channel", help="Colour -> gray policy (luminance, green, red, blue, max); "
                       "default: the model contract's.")
OVERLAY = typer.Option(False, "--overlay", help="Also write <stem>_overlay.png (mask contours + verdict).")
STATS = typer.Option(False, "--stats", help="Print p50/p95/p99 per stage and end to end at the end.")
RETRY = typer.Option(False, "--retry-failed", help="Queue inputs that failed in an earlier run again.")
READERS = typer.Option(2, "--readers", min=1, help="Reader/decoder threads.")
WRITERS = typer.Option(2, "--writers", min=1, help="Writer threads (stitch, mask PNG, result files, journal).")
QUEUE = typer.Option(8, "--queue", min=1, help="Frames waiting between stages (bounds memory).")
MAX_BATCH = typer.Option(32, "--max-batch", min=1, help="Most tiles per inference call (filled across images).")
PREPROCESS = typer.Option("auto", "--preprocess", help="auto | host | cuda (TensorRT + pycuda, or a checkpoint "
                          "on a GPU: tiles cut and masks thresholded there).")
CUDA_GRAPH = typer.Option(False, "--cuda-graph", help="TensorRT, torch on CUDA: replay CUDA graphs.")
TORCH_PRECISION = typer.Option("fp32", "--torch-precision", help="Checkpoint (torch backend): fp32 | fp16.")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="Checkpoint (torch backend): NHWC memory format.")
PRECISION_HINT = typer.Option("auto", "--precision-hint", help="OpenVINO: auto | f32 | bf16, the precision of "
                              "layers the file does not quantize (auto: bf16 where the CPU computes it natively).")
INFERENCE = typer.Option("tiles", "--inference", help=" | ".join(INFERENCE_MODES) + ": overlapping tiles, or the "
                         "whole field in one pass (tiles pooled from it; fields smaller than a tile run in tiles).")
CELLS = typer.Option("auto", "--cells", help=" | ".join(CELL_MODES) + ": per-cell analysis (cells in the result "
                     "JSON): from the model's distance head (auto: where it has one), connected components of the "
                     "mask (touching cells stay merged), or off.")
INSTANCE_LABELS = typer.Option(False, "--instance-labels", help="Also write <stem>_instances.png (16-bit cell ids).")
STITCH = typer.Option("majority", "--stitch", help="Tile masks -> image mask: majority | or.")
SPECIMEN_PATTERN = typer.Option(r"^(\d{5})_p\d+", "--specimen-pattern",
                                help="Regex on the file stem; group 1 is the specimen id.")
SPECIMEN_IMAGES = typer.Option(4, "--specimen-images", min=1, help="Images that complete a specimen.")
SPECIMEN_METHOD = typer.Option("vote", "--specimen-method", help=" | ".join(SPECIMEN_METHODS) + ": images vote, "
                               "mean probabilities, or the pattern most of the specimen's cells carry.")
MAX_FILE_MB = typer.Option(1024, "--max-file-mb", min=1, help="Larger files fail as absurdly large.")
MAX_INFLIGHT_MB = typer.Option(1024, "--max-inflight-mb", min=1, help="Memory for images between reading and "
                               "writing (decodes wait for room; one larger image still runs alone).")


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


def _config(command: str, out: Path | None, options: dict[str, Any], source: dict[str, Any]) -> Any:
    """Check the options and resolve the model, then RESULTS (so bad input leaves no empty run folder and no
    journal entry), and build the RunConfig."""
    select = import_stage("hep2edge.runtime.backends.select")
    service = import_stage("hep2edge.runtime.service")
    from hep2edge.runtime.pipeline import PipelineConfig
    from hep2edge.runtime.specimens import SpecimenConfig
    from hep2edge.runtime.stages import StageConfig

    service.check_run_options(options["device"], options["channel"], options["preprocess"], options["inference"])
    stage = StageConfig(max_file_bytes=options["max_file_mb"] << 20, stitch=options["stitch"],
                        max_inflight_bytes=options["max_inflight_mb"] << 20, cells=options["cells"])
    specimens = SpecimenConfig(options["specimen_pattern"], options["specimen_images"], options["specimen_method"])
    chosen = select.select_model(options["model"], options["backend"])
    console.print(f"model: {chosen.model} -> backend {chosen.backend} ({chosen.reason})", highlight=False, markup=False)
    service.check_backend_options(chosen.backend, options["device"], options["torch_precision"],
                                  options["channels_last"], options["precision_hint"])
    return service.RunConfig(
        command=command, out=resolve_out_dir(out, command), model=chosen.model, backend=chosen.backend,
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
    from hep2edge.runtime.service import run_service

    if not logging.getLogger().handlers:
        # a long-running watcher logs each failure as it happens; analyze lists them in its summary
        level = logging.ERROR if config.command == "analyze" else logging.WARNING
        logging.basicConfig(level=level, format="warning: %(message)s")
    show_resolved(config.command, config)
    summary = run_service(config, make_source, console)
    _print_summary(summary)
    if show_stats:
        from hep2edge.runtime.stats import percentile_table

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
def analyze(
    paths: list[str] = typer.Argument(None, help="Image files, folders or glob patterns.", show_default=False),
    model: Path = MODEL, out: Path = OUT, backend: str = BACKEND, device: str = DEVICE, channel: str = CHANNEL,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folder inputs."),
    overlay: bool = OVERLAY, stats: bool = STATS, retry_failed: bool = RETRY, readers: int = READERS,
    queue: int = QUEUE, max_batch: int = MAX_BATCH, preprocess: str = PREPROCESS, cuda_graph: bool = CUDA_GRAPH,
    torch_precision: str = TORCH_PRECISION, channels_last: bool = CHANNELS_LAST, precision_hint: str = PRECISION_HINT,
    inference: str = INFERENCE, cells: str = CELLS, instance_labels: bool = INSTANCE_LABELS,
    writers: int = WRITERS,
    stitch: str = STITCH, specimen_pattern: str = SPECIMEN_PATTERN, specimen_images: int = SPECIMEN_IMAGES,
    specimen_method: str = SPECIMEN_METHOD, max_file_mb: int = MAX_FILE_MB, max_inflight_mb: int = MAX_INFLIGHT_MB,
) -> None:
    """Analyse files once and exit with a summary (exit 1 if any input failed, now or in an earlier run)."""
    options = dict(locals())
    specs = _require(paths, "PATH...", "analyze.paths")
    from hep2edge.runtime.sources.files import FileListSource, expand_inputs

    inputs = expand_inputs([str(p) for p in specs], recursive)
    config = _config("analyze", out, options, {"paths": list(specs)})
    summary = _run(config, lambda journal: FileListSource(inputs), stats)
    if summary.failed or summary.skipped_failed:
        raise typer.Exit(1)


@app.command()
def watch(
    folder: Path = typer.Argument(None, help="Folder the scanner writes into.", show_default=False),
    model: Path = MODEL,
    out: Path = typer.Option(None, "--out", "-o", help="RESULTS folder (default: runs/watch/<folder name>, "
                             "the same on every restart)."),
    backend: str = BACKEND, device: str = DEVICE, channel: str = CHANNEL,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Watch sub-folders too."),
    poll: bool = typer.Option(False, "--poll", help="Poll instead of inotify (network shares)."),
    poll_interval: float = typer.Option(1.0, "--poll-interval", min=0.05, help="Seconds between polls."),
    settle: int = typer.Option(1000, "--settle", min=0, help="ms a file's size and mtime must stay the same."),
    existing: bool = typer.Option(False, "--existing", help="First watch of a folder: also analyse the files "
                                  "already in it (a restart always analyses whatever the journal has no result "
                                  "for, whatever its age)."),
    max_files: int = typer.Option(0, "--max-files", min=0, help="Exit after this many files were taken in "
                                  "and written (0: run until SIGINT/SIGTERM)."),
    overlay: bool = OVERLAY, stats: bool = STATS, retry_failed: bool = RETRY, readers: int = READERS,
    queue: int = QUEUE, max_batch: int = MAX_BATCH, preprocess: str = PREPROCESS, cuda_graph: bool = CUDA_GRAPH,
    torch_precision: str = TORCH_PRECISION, channels_last: bool = CHANNELS_LAST, precision_hint: str = PRECISION_HINT,
    inference: str = INFERENCE, cells: str = CELLS, instance_labels: bool = INSTANCE_LABELS,
    writers: int = WRITERS,
    stitch: str = STITCH, specimen_pattern: str = SPECIMEN_PATTERN, specimen_images: int = SPECIMEN_IMAGES,
    specimen_method: str = SPECIMEN_METHOD, max_file_mb: int = MAX_FILE_MB, max_inflight_mb: int = MAX_INFLIGHT_MB,
) -> None:
    """Analyse every image that appears in FOLDER until SIGINT/SIGTERM (then finish in-flight work, exit 0)."""
    options = dict(locals())
    root = Path(_require(folder, "FOLDER", "watch.folder"))
    from hep2edge.runtime.sources.watch import WatchConfig
    from hep2edge.runtime.watch_restart import restart_source

    watch_config = WatchConfig(root, recursive, poll, poll_interval, settle, existing, max_files)
    if out is None:
        out = stable_watch_dir(root)
        console.print(f"results: {out} (stable for {root}; pass --out to choose)", highlight=False, markup=False)
    config = _config("watch", out, options, {"folder": str(root)})

    def make_source(journal: Any) -> Any:
        source = restart_source(journal, watch_config)
        if source.first:
            console.print(f"restart: {len(source.first)} unfinished file(s) queued first", highlight=False)
        return source

    _run(config, make_source, stats)


@app.command()
def camera(
    source: str = typer.Argument(None, help="Device index, stream URL or video file.", show_default=False),
    model: Path = MODEL, out: Path = OUT, backend: str = BACKEND, device: str = DEVICE, channel: str = CHANNEL,
    fps: float = typer.Option(2.0, "--fps", help="Frames analysed per second (stream time for files)."),
    buffer: int = typer.Option(2, "--buffer", min=1, help="Frames kept waiting; the oldest is dropped when behind."),
    max_frames: int = typer.Option(0, "--max-frames", min=0, help="Stop after this many sampled frames (0: never)."),
    overlay: bool = OVERLAY, stats: bool = STATS, readers: int = READERS, queue: int = QUEUE,
    max_batch: int = MAX_BATCH, preprocess: str = PREPROCESS, cuda_graph: bool = CUDA_GRAPH,
    torch_precision: str = TORCH_PRECISION, channels_last: bool = CHANNELS_LAST, precision_hint: str = PRECISION_HINT,
    inference: str = INFERENCE, cells: str = CELLS, instance_labels: bool = INSTANCE_LABELS,
    writers: int = WRITERS,
    stitch: str = STITCH,
) -> None:
    """Analyse camera or video frames at --fps until the stream ends or SIGINT/SIGTERM."""
    options = {**dict(locals()), "retry_failed": False, "specimen_pattern": r"^(\d{5})_p\d+",
               "specimen_images": 4, "specimen_method": "vote", "max_file_mb": 1024, "max_inflight_mb": 1024}
    spec = str(_require(source, "SOURCE", "camera.source"))
    from hep2edge.runtime.sources.camera import CameraConfig, CameraSource

    camera_config = CameraConfig(spec, fps, buffer, max_frames)
    config = _config("camera", out, options, {"camera": spec, "fps": fps})
    _run(config, lambda journal: CameraSource(camera_config), stats)
