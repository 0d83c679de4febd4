"""The host work around the model, per image at real size: what the pipeline's reader and writer threads cost.

    python benchmarks/bench_host.py [--quick] [--out DIR] [--work DIR] [--size 1040x1388] [--tile 384]
        [--images 60] [--threads 1,2,4] [--overlay]

The product's own stage code on unique synthetic fields, no model: the reader stage (`Reader.read`: read +
sha256, journal claim, decode, numpy tiles) and the writer stage (`Writer.write`: stitch, result document,
`<stem>_mask.png` + `<stem>.json` with fsync, journal commit, specimen verdicts), fed a perfect model's
outputs (the field's true cell mask, which sets the PNG encoding cost). After a warm-up on 8 fields:
per-step p50/p95 from the service's stage timers with one thread, then images/s of each stage with 1, 2, 4
threads. The slower stage is the ceiling the host puts on pipeline throughput, whatever the GPU does.
Writes the `host` section.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.cli import add_common, parse, pool_folder, say, size_of, work_folder
from benchlib.data import synth_pool, unique_copies
from benchlib.results import command_line, publish_section
from benchlib.tables import fmt, markdown_table

from hep2edge.data.manifest import mask_path_for
from hep2edge.imageio import read_mask

STEPS = ("read", "decode", "preprocess", "stitch", "write", "journal")
QUICK = {"images": 24, "threads": "1,2"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser)
    parser.add_argument("--images", type=int, default=60, help="unique fields per run")
    parser.add_argument("--threads", default="1,2,4", help="thread counts to run each stage with")
    parser.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (as --overlay)")
    return parse(parser, argv, QUICK)


class HostStages:
    """A fresh RESULTS folder with its journal, and the reader and writer the service would build there."""

    def __init__(self, results: Path, tile: int, overlay: bool) -> None:
        from hep2edge.contract import ModelContract
        from hep2edge.runtime.journal import Journal
        from hep2edge.runtime.results import ModelInfo
        from hep2edge.runtime.settings import SpecimenConfig, StageConfig
        from hep2edge.runtime.sinks import IMAGE_SINKS
        from hep2edge.runtime.stage_timings import StageStats
        from hep2edge.runtime.stages import Reader, Writer
        from hep2edge.runtime.status import StatusBoard

        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        self.contract = ModelContract(tile=tile)
        self.journal = Journal(results, {"command": "bench_host"})
        self.stats, board = StageStats(), StatusBoard()
        sinks = ([IMAGE_SINKS.get("overlay")(results)] if overlay else []) + [IMAGE_SINKS.get("json")(results)]
        model = ModelInfo("bench-host", "fp32", "none", "-", "cpu")
        self.reader = Reader(StageConfig(), self.contract, self.journal, self.stats, board, tiles_on_host=True)
        self.writer = Writer(StageConfig(), self.contract, model, self.journal, sinks, SpecimenConfig(),
                             self.stats, board)

    def close(self) -> None:
        self.journal.close()


def fake_outputs(frame: Any, masks: list[np.ndarray]) -> None:
    """A perfect model's outputs: the field's true cell mask cut into tiles, fixed class probabilities.

    (Copy `serial` of the fields was made from pool field `serial % len(pool)`; see `unique_copies`.)
    """
    from hep2edge.runtime.results import TileOutputs
    from hep2edge.tiling import extract_tiles

    mask = extract_tiles(masks[frame.serial % len(masks)], frame.grid)
    n = len(mask)
    pattern = np.tile(np.array([0.05, 0.6, 0.1, 0.1, 0.05, 0.05, 0.05], np.float32), (n, 1))
    frame.parts = [TileOutputs(mask, pattern, np.full(n, 0.7, np.float32))]
    frame.received = n


def _read(stages: HostStages, indexed: tuple[int, Any]) -> Any:
    frame = stages.reader.read(indexed[1], indexed[0], time.perf_counter())
    if frame is None:
        raise RuntimeError(f"the reader refused {indexed[1].path} (see {stages.journal.path})")
    return frame


def reader_rate(items: list[Any], results: Path, threads: int, args: argparse.Namespace) -> tuple[float, Any]:
    """Images/s of the reader stage; frames are dropped as they come (memory stays flat, as in the pipeline)."""
    stages = HostStages(results, args.tile, args.overlay)
    try:
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            for _ in pool.map(lambda ix: _read(stages, ix) and None, enumerate(items)):
                pass
            return len(items) / (time.perf_counter() - started), stages.stats
    finally:
        stages.close()


def writer_rate(items: list[Any], masks: list[np.ndarray], results: Path, threads: int,
                args: argparse.Namespace) -> tuple[float, Any]:
    """Images/s of the writer stage: frames read (untimed) a few at a time, then written by `threads` threads."""
    stages = HostStages(results, args.tile, args.overlay)
    chunk, spent = 2 * threads, 0.0
    try:
        with ThreadPoolExecutor(threads) as pool:
            for first in range(0, len(items), chunk):
                frames = [_read(stages, (i, items[i])) for i in range(first, min(first + chunk, len(items)))]
                for frame in frames:
                    fake_outputs(frame, masks)
                started = time.perf_counter()
                list(pool.map(stages.writer.write, frames))
                spent += time.perf_counter() - started
        return len(items) / spent, stages.stats
    finally:
        stages.close()


def run_stages(files: list[Path], masks: list[np.ndarray], work: Path, threads: int,
               args: argparse.Namespace) -> dict[str, Any]:
    """Both stages over `files` with `threads` threads each; images/s per stage and the stage timers."""
    from hep2edge.runtime.sources.base import Item

    items = [Item(str(path), path.stem, path) for path in files]
    reader_s, reader_stats = reader_rate(items, work / f"host-read-{threads}", threads, args)
    writer_s, writer_stats = writer_rate(items, masks, work / f"host-write-{threads}", threads, args)
    steps = {**reader_stats.percentiles(), **writer_stats.percentiles()}
    return {"threads": threads, "reader_images_s": reader_s, "writer_images_s": writer_s,
            "steps": {k: steps[k] for k in STEPS if k in steps}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = size_of(args)
    counts = [int(t) for t in args.threads.split(",") if t.strip()]
    with work_folder(args) as work:
        pool = synth_pool(pool_folder(work, args), 7, size, args.seed)
        files = unique_copies(pool, work / f"host-{args.size}", args.images)
        masks = [read_mask(mask_path_for(path)).astype(np.uint8) for path in pool]
        say("warm-up: the allocator and page cache settle on the first fields")
        run_stages(files[:8], masks, work / "warm-up", 1, args)
        rows = []
        for threads in counts:
            say(f"{len(files)} fields of {size[0]}x{size[1]}, {threads} thread(s) per stage")
            rows.append(run_stages(files, masks, work, threads, args))
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "size": list(size),
            "tile": args.tile, "images": len(files), "overlay": args.overlay, "runs": rows}


def markdown(section: dict[str, Any]) -> str:
    h, w = section["size"]
    lines = ["## Host stages: the reader and writer threads without a model", "",
             f"`{section['command']}` ({section['started']})", "",
             f"{section['images']} unique synthetic fields of {h} x {w}, {section['tile']} px tiles, through the "
             "product's `Reader.read` and `Writer.write` (mask PNG and JSON with fsync, journal commit"
             f"{', overlay' if section['overlay'] else ''}); outputs of a perfect model (the fields' true masks). "
             "The slower stage caps pipeline throughput whatever the backend does.", "",
             "Per step with one thread (ms):", ""]
    steps = section["runs"][0]["steps"]
    lines.append(markdown_table(["step", "p50", "p95"],
                                [[k, fmt(v["p50"], 2), fmt(v["p95"], 2)] for k, v in steps.items()], right=(1, 2)))
    lines += ["", "Images/s per stage:", ""]
    lines.append(markdown_table(["threads", "reader images/s", "writer images/s"],
                                [[r["threads"], fmt(r["reader_images_s"], 0), fmt(r["writer_images_s"], 0)]
                                 for r in section["runs"]], right=(0, 1, 2)))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return publish_section(args.out, "host", run(args), markdown)


if __name__ == "__main__":
    raise SystemExit(main())
