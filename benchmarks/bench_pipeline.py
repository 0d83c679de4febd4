"""End to end through `hep2edge watch`: file-complete -> result-written latency, images/s, and pipeline_ratio.

    python benchmarks/bench_pipeline.py [--quick] [--out DIR] [--models DIR] [--images 200]
        [--modes rate,burst] [--rate auto|IMAGES_PER_S] [--batch 32] [--backend auto] [--settle-ms 1000]
        [--inference tiles|field] [--precision-hint auto|f32|bf16]

N unique synthetic fields are copied into a watched folder (each written under a hidden name and renamed
into place, as scanners do) at a set rate and, in a second run, all at once. The product's own service
(`run_service` with the inotify folder watcher that `watch` uses, ending after N files) analyses them; an
inotify monitor on RESULTS notes when each `<stem>.json` (written last) appears. The bare backend is timed
at the same batch, before and after the pipeline runs, in the same process; `pipeline_ratio` = steady-state
pipeline images/s (burst run, first and last tenth of completions left out) / bare backend images/s.

`--inference field` runs the service whole-field (`watch --inference field`) and times the bare backend the
same way: one `infer_field` call per image on the whole-field input of each pool image, cycled. Its section is
`pipeline-field`, so it does not replace the tile-mode `pipeline` section of the same day. A field the runtime
cannot take whole (smaller than a tile, larger than the engine's field profile) runs in tiles, in the service
and in the bare timing alike; the output says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchlib.choice import Choice, backend_config, choose, open_backend
from benchlib.cli import add_common, engine_profile, parse, pool_folder, resolve_models, say, size_of, work_folder
from benchlib.data import cycled_batches, image_fields, image_tiles, synth_pool, tiles_per_image, unique_copies
from benchlib.feed import Feeder, ResultMonitor
from benchlib.results import command_line, publish_section
from benchlib.stats import per_second, pipeline_ratio, steady_rate, summarize
from benchlib.tables import fmt, markdown_table
from benchlib.timing import Budget, time_calls

from hep2edge.runtime.backends import BACKENDS
from hep2edge.runtime.settings import INFERENCE_MODES, PRECISION_HINTS

MIN_STEADY = 20  # completions in the steady window below which the ratio is flagged
QUICK = {"images": 24, "batch": 12, "pool_images": 4, "bare_seconds": 1.0, "warmup_images": 2}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser)
    parser.add_argument("--images", type=int, default=200, help="images copied into the watched folder per run")
    parser.add_argument("--pool-images", type=int, default=8, help="distinct synthetic fields the copies cycle over")
    parser.add_argument("--modes", default="rate,burst", help="rate (at --rate images/s) and/or burst (all at once)")
    parser.add_argument("--rate", default="auto", help="images/s of the rate run (auto: half the bare backend's)")
    parser.add_argument("--batch", type=int, default=32, help="max tiles per inference call (pipeline and bare)")
    parser.add_argument("--backend", default="auto", choices=("auto", *BACKENDS.names()),
                        help=" | ".join(("auto", *BACKENDS.names())))
    parser.add_argument("--precision", default="auto", help="auto | fp32 | fp16 | int8")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision-hint", default="auto", choices=PRECISION_HINTS,
                        help="openvino only: what it computes unquantized layers in (auto: bf16 where native)")
    parser.add_argument("--inference", default=INFERENCE_MODES[0], choices=INFERENCE_MODES,
                        help="the service's --inference, and how the bare backend is timed (field: one "
                             "infer_field call per image)")
    parser.add_argument("--readers", type=int, default=2, help="reader/decoder threads of the pipeline")
    parser.add_argument("--writers", type=int, default=2, help="writer threads of the pipeline")
    parser.add_argument("--settle-ms", type=int, default=1000, help="watch --settle (the product's default)")
    parser.add_argument("--warmup-images", type=int, default=5, help="first images of the rate run not counted")
    parser.add_argument("--bare-seconds", type=float, default=None,
                        help="seconds of bare backend timing, before and after (default 20 on a CPU, 5 on a GPU)")
    return parse(parser, argv, QUICK)


def bare_throughput(choice: Choice, batch: int, tiles: Any, seconds: float, per_image: int,
                    fields: list[Any] | None = None, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The backend alone: full batches of real tiles, or (`fields` given) one `infer_field` call per image on
    the pool's whole-field inputs, cycled; latency summary, patches/s, images/s. A field the runtime would run
    in tiles (runtime/field.py field_problem) is timed in tiles too, with the reason as `fallback`."""
    from hep2edge.runtime.field import field_problem

    gpu = choice.device == "cuda"
    budget = Budget(warmup=20 if gpu else 1, min_iters=50 if gpu else 3, min_seconds=seconds,
                    max_seconds=3 * seconds, max_iters=100_000)
    with open_backend(choice, batch) as backend:
        fallback = None
        if fields is not None and size is not None:
            fallback = field_problem(size[0], size[1], backend.contract, backend.largest_field)
        if fields is not None and fallback is None:
            samples = time_calls(lambda i: backend.infer_field(fields[i % len(fields)]), budget)
            images = per_second(len(samples), sum(samples) / 1000)
        else:
            inputs = cycled_batches(tiles, batch)
            samples = time_calls(lambda i: backend.infer(inputs[i % len(inputs)]), budget)
            images = per_second(batch * len(samples), sum(samples) / 1000) / per_image
        described = backend.describe()
    inference = "field" if fields is not None and fallback is None else "tiles"
    return {"describe": described, "inference": inference, "fallback": fallback, "latency_ms": summarize(samples),
            "patches_s": images * per_image, "images_s": images}


def service_config(choice: Choice, args: argparse.Namespace, watched: Path, results: Path) -> Any:
    from hep2edge.runtime.settings import PipelineConfig, RunConfig

    opened = backend_config(choice, args.batch)  # one place decides the backend's options
    return RunConfig(command="watch", out=results, model=choice.model, backend=choice.backend,
                     model_reason=choice.reason, device=choice.device, preprocess=choice.preprocess,
                     cuda_graph=opened.cuda_graph, channels_last=opened.channels_last,
                     torch_precision=opened.torch_precision, inference_precision=opened.inference_precision,
                     inference=args.inference,
                     pipeline=PipelineConfig(readers=args.readers, writers=args.writers, max_batch=args.batch),
                     source={"folder": str(watched), "benchmark": "bench_pipeline"})


def run_mode(name: str, rate: float | None, files: list[Path], choice: Choice, args: argparse.Namespace,
             work: Path) -> dict[str, Any]:
    """One watch run over `files`; per-image latencies, throughput and the service's stage timings."""
    from rich.console import Console

    from hep2edge.cli.reporter import RichReporter
    from hep2edge.runtime.service import run_service
    from hep2edge.runtime.sources.watch import WatchConfig
    from hep2edge.runtime.watch_restart import restart_source

    watched, results = work / f"watch-{name}", work / f"results-{name}"
    for folder in (watched, results):
        shutil.rmtree(folder, ignore_errors=True)
    watched.mkdir(parents=True)
    feeder = Feeder(files, watched, rate)
    watch = WatchConfig(watched, settle_ms=args.settle_ms, max_files=len(files))

    def make_source(journal: Any) -> Any:
        source = restart_source(journal, watch)
        feeder.start()
        return source

    say(f"{name}: {len(files)} images into {watched}" + (f" at {rate:.2f}/s" if rate else " all at once"))
    with ResultMonitor(results, {f.stem for f in files}) as monitor:
        reporter = RichReporter(Console(stderr=True))
        summary = run_service(service_config(choice, args, watched, results), make_source, reporter)
    feeder.join(timeout=60)
    if feeder.error is not None:
        raise RuntimeError(f"copying into {watched} failed: {feeder.error}")
    return mode_result(name, rate, files, feeder.complete_at, monitor.written_at, summary, results, args)


def mode_result(name: str, rate: float | None, files: list[Path], complete: dict[str, float],
                written: dict[str, float], summary: Any, results: Path, args: argparse.Namespace) -> dict[str, Any]:
    order = [f.stem for f in files if f.stem in complete and f.stem in written]
    counted = order[args.warmup_images:] if name == "rate" else order
    latencies = [(written[s] - complete[s]) * 1000 for s in counted]
    facts = {s: result_facts(results, s) for s in order}
    inside = [facts[s][0] for s in counted]
    inference = dict(Counter(str(facts[s][1]) for s in order))
    outside = [lat - t for lat, t in zip(latencies, inside) if t is not None]
    times = sorted(written.values())
    overall = per_second(len(times) - 1, times[-1] - min(complete.values())) if len(times) > 1 else float("nan")
    steady = steady_rate(times)
    say(f"{name}: {summary.processed} analysed, {len(summary.failed)} failed; latency p50 "
        f"{summarize(latencies)['p50']:.1f} ms; steady {steady['rate']:.2f} images/s")
    if args.inference == "field" and set(inference) != {"field"}:
        say(f"{name}: NOT all whole-field: the service analysed {inference_text(inference)} "
            "(a field it cannot take whole runs in tiles; see the service's warnings above)")
    return {"name": name, "rate": rate, "images": len(files), "processed": summary.processed,
            "failed": [reason for _, reason in summary.failed][:10], "counted": len(counted),
            "latency_ms": summarize(latencies), "latencies_ms": [round(v, 3) for v in latencies],
            "in_pipeline_ms": summarize([t for t in inside if t is not None]),
            "outside_pipeline_ms": summarize(outside), "steady_images_s": steady["rate"], "steady": steady,
            "overall_images_s": overall, "stages": summary.stages, "backend": summary.backend,
            "inference": inference}


def result_facts(results: Path, stem: str) -> tuple[float | None, str | None]:
    """The service's own emit -> before-write time of one image and how it ran it (`tiles` | `field`), from its
    result document."""
    try:
        document = json.loads((results / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None, None
    try:
        total: float | None = float(document["timings_ms"]["total"])
    except (KeyError, TypeError, ValueError):
        total = None
    inference = document.get("model", {}).get("inference") if isinstance(document, dict) else None
    return total, inference if isinstance(inference, str) else None


def inference_text(counts: dict[str, int]) -> str:
    """{"field": 20, "tiles": 4} -> "20 field, 4 tiles"."""
    return ", ".join(f"{n} {mode}" for mode, n in sorted(counts.items())) or "-"


def bare_both(choice: Choice, args: argparse.Namespace, tiles: Any, per_image: int, before: dict[str, Any],
              fields: list[Any] | None, size: tuple[int, int]) -> dict[str, Any]:
    """Average of the bare-backend timings before and after the pipeline runs (drift on a shared machine)."""
    after = bare_throughput(choice, args.batch, tiles, args.bare_seconds, per_image, fields, size)
    mean = (before["images_s"] + after["images_s"]) / 2
    return {**before, "images_s": mean, "patches_s": mean * per_image, "before": before, "after": after}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = size_of(args)
    precisions = ("fp32", "fp16", "int8") if args.precision == "auto" else (args.precision,)
    models = resolve_models(args, work, precisions, engine_batch=engine_profile(args, args.batch))
    choice = choose(models, args.backend, args.precision, args.device)
    if args.precision_hint != "auto":
        if choice.backend != "openvino":
            raise SystemExit(f"--precision-hint is OpenVINO's; the backend chosen is {choice.backend}")
        choice = replace(choice, hint=args.precision_hint)
    say(f"backend: {choice.label()} ({choice.reason})")
    if args.bare_seconds is None:
        args.bare_seconds = 5.0 if choice.device == "cuda" else 20.0
    pool = synth_pool(pool_folder(work, args), args.pool_images, size, args.seed)
    per_image = tiles_per_image(size, models.contract().tile)  # the model's tile, also for --models
    tiles = image_tiles(pool, models.contract())
    fields = image_fields(pool, models.contract()) if args.inference == "field" else None
    how = "one whole-field pass per image" if fields is not None else f"batch {args.batch}"
    say(f"bare backend, {how}: {args.bare_seconds:g} s")
    before = bare_throughput(choice, args.batch, tiles, args.bare_seconds, per_image, fields, size)
    if before["fallback"]:
        say(f"  whole-field inference falls back to tiles for {size[0]}x{size[1]} fields: {before['fallback']}; "
            "the service and the bare backend both run tiles")
    say(f"  {before['images_s']:.2f} images/s ({before['patches_s']:.1f} patches/s)")
    files = unique_copies(pool, work / "staged", args.images)
    modes = []
    for name in [m.strip() for m in args.modes.split(",") if m.strip()]:
        rate = None if name == "burst" else rate_of(args.rate, before["images_s"])
        modes.append(run_mode(name, rate, files, choice, args, work))
    bare = bare_both(choice, args, tiles, per_image, before, fields, size)
    burst = next((m for m in modes if m["name"] == "burst"), None)
    ratio = pipeline_ratio(burst["steady_images_s"], bare["images_s"]) if burst else float("nan")
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": models.to_dict(),
            "choice": choice.to_dict(), "label": choice.label(), "image_size": list(size),
            "tiles_per_image": per_image, "batch": args.batch, "readers": args.readers, "writers": args.writers,
            "settle_ms": args.settle_ms, "warmup_images": args.warmup_images, "bare": bare, "modes": modes,
            "inference": args.inference, "field_fallback": before["fallback"], "pipeline_ratio": ratio,
            "title": f"{choice.label()}, {mode_words(args.inference)}, batch {args.batch}, "
                     f"{size[0]}x{size[1]} images"}


def mode_words(inference: str) -> str:
    return "whole-field inference" if inference == "field" else "tile inference"


def section_name(inference: str) -> str:
    """`pipeline` for tile mode (the targets read it), `pipeline-field` for whole-field runs: both kept."""
    return "pipeline" if inference == "tiles" else f"pipeline-{inference}"


def rate_of(text: str, bare_images_s: float) -> float:
    return 0.5 * bare_images_s if text == "auto" else float(text)


def markdown(section: dict[str, Any]) -> str:
    size, bare = section["image_size"], section["bare"]
    inference = section.get("inference", "tiles")
    heading = "## Pipeline: end to end through `watch`" + (f" --inference {inference}" if inference != "tiles" else "")
    lines = [heading, "",
             f"`{section['command']}` ({section['started']})", "",
             f"{section['label']} ({section['choice']['reason']}); {section['models'].get('description')}; "
             f"{size[0]} x {size[1]} images = {section['tiles_per_image']} tiles; batch {section['batch']}, "
             f"{section['readers']} readers, {section.get('writers', 1)} writers, settle {section['settle_ms']} ms; "
             "rename-into-place copies, "
             f"inotify watcher. The rate run leaves out its first {section['warmup_images']} images. "
             f"Inference: {mode_words(inference)}"
             + (f" (falls back to tiles: {section['field_fallback']})" if section.get("field_fallback") else "")
             + ".", ""]
    rows = [[m["name"], fmt(m["rate"], 2) if m["rate"] else "all at once", f"{m['processed']}/{m['images']}",
             *(fmt(m["latency_ms"][k], 1) for k in ("p50", "p95", "p99")), fmt(m["in_pipeline_ms"]["p50"], 1),
             fmt(m["outside_pipeline_ms"]["p50"], 1), fmt(m["steady_images_s"], 2), fmt(m["overall_images_s"], 2),
             inference_text(m.get("inference", {}))]
            for m in section["modes"]]
    lines.append(markdown_table(["run", "images/s in", "analysed", "p50 ms", "p95 ms", "p99 ms",
                                 "p50 in pipeline ms", "p50 outside ms", "steady images/s", "overall images/s",
                                 "inference"], rows, right=range(2, 10)))
    how = ("one `infer_field` call per image" if bare.get("inference") == "field"
           else f"batch {section['batch']}")
    lines += ["", f"Bare backend, {how} ({bare['describe']}): {fmt(bare['images_s'], 2)} "
              f"images/s (before {fmt(bare['before']['images_s'], 2)}, after {fmt(bare['after']['images_s'], 2)}). "
              f"**pipeline_ratio = {fmt(section['pipeline_ratio'], 3)}** (steady burst throughput / bare)"
              + few_note(section) + ".", "",
              "Latency = file renamed into the watched folder -> its `<stem>.json` appears in RESULTS. "
              "\"In pipeline\" is the service's own emit -> write time; \"outside\" is the rest (the watcher noticing "
              "the file, writing the mask and JSON)."]
    lines += stage_tables(section)
    if section.get("plot"):
        lines += ["", f"![pipeline latency and throughput]({section['plot']})"]
    return "\n".join(lines) + "\n"


def few_note(section: dict[str, Any]) -> str:
    """A warning when the steady window held too few completions for a stable rate (batches finish in clumps)."""
    burst = next((m for m in section["modes"] if m["name"] == "burst"), None)
    if burst is None or burst["steady"]["counted"] >= MIN_STEADY:
        return ""
    return f"; only {burst['steady']['counted']} completions in the steady window: not a stable figure"


def stage_tables(section: dict[str, Any]) -> list[str]:
    out = []
    for mode in section["modes"]:
        rows = [[stage, int(v["n"]), *(fmt(v[k], 1) for k in ("p50", "p95", "p99", "mean"))]
                for stage, v in mode["stages"].items()]
        out += ["", f"Stage timings of the {mode['name']} run (ms, the service's `--stats`):", "",
                markdown_table(["stage", "n", "p50", "p95", "p99", "mean"], rows, right=range(1, 6))]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with work_folder(args) as work:
        section = run(args, work)
    from benchlib.plots import pipeline_plot

    return publish_section(args.out, section_name(args.inference), section, markdown, pipeline_plot)


if __name__ == "__main__":
    raise SystemExit(main())
