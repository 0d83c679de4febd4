"""Soak `hep2edge watch` with many small images: does its resident memory plateau, and does throughput hold?

    python benchmarks/bench_soak.py [--files 10000] [--size 128x128] [--tile 64] [--models DIR] [--out DIR]
        [--work DIR] [--rate 0] [--ahead 32] [--settle-ms 50] [--max-minutes 0] [--watch-args "..."]
        [--tracemalloc]

The real watcher runs in its own process (`python -m hep2edge watch IN --model M --backend onnxruntime
--out RES --settle 50 --max-files N`) while this one writes N unique synthetic 8-bit TIFFs into IN, each
under a hidden name and renamed into place, keeping at most --ahead files without a result (and, with --rate,
at most that many files per second). Every --interval seconds it reads the watcher's VmRSS, VmHWM, threads
and open files from /proc/PID and the rows of RESULTS/results.db. Reported: RSS after warm-up (the first
--warmup-fraction of the images) and at the end, the slope of RSS against images processed over the second
half (least squares, kB/image), images/s, and `plateau` / `grows` against --flat-kb. --max-minutes stops
feeding after that long and stops the watcher with SIGTERM (it finishes what it took in).

--tracemalloc runs the same watcher under tracemalloc (benchlib/soak_child.py) and compares snapshots taken
after warm-up and at the end: the source lines whose live Python memory grew most, and the object types whose
count grew. That run's RSS includes tracemalloc's own bookkeeping; quote the plain run's figures.

Default model: the test suite's tiny U-Net (resnet18 encoder, decoder 32,16,16,8,8, 64 px tiles, random
weights) exported to fp32 ONNX in the work folder; 128 x 128 images are 4 tiles. Writes
<machine>-soak-<date>.json / .md / .png (or -soak-tracemalloc-) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.cli import add_common, parse, pool_folder, resolve_models, say, size_of, work_folder
from benchlib.data import synth_pool, tiles_per_image
from benchlib.plots import save_figure
from benchlib.results import command_line, environment, machine_name, result_path, today, write_json_md
from benchlib.soak import ResultCount, Sample, SoakFeeder, as_rows, figures, rates, sample
from benchlib.tables import fmt, markdown_table

HERE = Path(__file__).resolve().parent
TINY = {"encoder": "resnet18", "decoder_channels": "32,16,16,8,8", "tile": 64, "size": "128x128"}
QUICK = {**TINY, "files": 300}
STALL_S = 120.0  # no new result for this long while files wait: the watcher is stuck, stop it
TOP = 15


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser)
    parser.set_defaults(**TINY)
    parser.add_argument("--files", type=int, default=10_000, help="images written into the watched folder")
    parser.add_argument("--pool-images", type=int, default=8, help="distinct synthetic fields the files cycle over")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="files per second at most (0: as fast as the watcher keeps up, see --ahead)")
    parser.add_argument("--ahead", type=int, default=32, help="files written but without a result, at most")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--warmup-fraction", type=float, default=0.1,
                        help="RSS 'after warm-up' is read once this fraction of the images is done")
    parser.add_argument("--flat-kb", type=float, default=0.5,
                        help="second-half slope (kB/image) under which memory counts as a plateau")
    parser.add_argument("--settle-ms", type=int, default=50, help="watch --settle")
    parser.add_argument("--backend", default="onnxruntime", help="watch --backend")
    parser.add_argument("--device", default="auto", help="watch --device")
    parser.add_argument("--watch-args", default="", help="more options for `hep2edge watch`")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop feeding after this long and stop the watcher (0: run all --files)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="diagnose: run the watcher under tracemalloc, compare snapshots after warm-up and "
                             "at the end")
    return parse(parser, argv, QUICK)


def watch_command(args: argparse.Namespace, model: Path, watched: Path, results: Path, traces: Path) -> list[str]:
    """`python -m hep2edge watch ...`, or the same through soak_child.py with --tracemalloc."""
    head = ([sys.executable, str(HERE / "benchlib" / "soak_child.py"), str(traces)] if args.tracemalloc
            else [sys.executable, "-m", "hep2edge"])
    return [*head, "watch", str(watched), "--model", str(model), "--backend", args.backend, "--device", args.device,
            "--out", str(results), "--settle", str(args.settle_ms), "--max-files", str(args.files),
            *shlex.split(args.watch_args)]


class Snapshots:
    """With --tracemalloc: ask the watcher for a snapshot (SIGUSR1) and wait until it has written it."""

    def __init__(self, folder: Path, pid: int) -> None:
        self.folder, self.pid, self.taken = folder, pid, 0
        self.at: list[int] = []

    def take(self, processed: int, timeout_s: float = 300.0) -> bool:
        n = self.taken
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while not (self.folder / f"done-{n}").exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        self.taken += 1
        self.at.append(processed)
        return True


def project_frame(stat: Any) -> str:
    """The innermost frame of a traceback inside hep2edge (runtime/, hep2edge/), else '-'."""
    for frame in reversed(stat.traceback):
        if any(part in frame.filename for part in ("/runtime/", "/hep2edge/", "/export/", "/train/")):
            return f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"
    return "-"


def growth(snapshots: Snapshots, samples: list[Sample]) -> dict[str, Any]:
    """The source lines and object types that grew between the first and the last snapshot."""
    import tracemalloc

    if snapshots.taken < 2:
        return {"error": "fewer than two snapshots were taken"}
    first = tracemalloc.Snapshot.load(str(snapshots.folder / "snapshot-0.trace"))
    last = tracemalloc.Snapshot.load(str(snapshots.folder / f"snapshot-{snapshots.taken - 1}.trace"))
    images = max(1, snapshots.at[-1] - snapshots.at[0])
    lines = [{"where": f"{stat.traceback[-1].filename}:{stat.traceback[-1].lineno}", "via": project_frame(stat),
              "kb": stat.size_diff / 1024, "bytes_per_image": stat.size_diff / images, "blocks": stat.count_diff,
              "stack": [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback]}
             for stat in last.compare_to(first, "traceback")[:TOP]]
    opening = json.loads((snapshots.folder / "objects-0.json").read_text())
    closing = json.loads((snapshots.folder / f"objects-{snapshots.taken - 1}.json").read_text())
    before, after = opening["types"], closing["types"]
    types = sorted(((name, after.get(name, 0) - before.get(name, 0)) for name in set(before) | set(after)),
                   key=lambda pair: -pair[1])[:TOP]
    traced = sum(s.size for s in last.statistics("filename")) - sum(s.size for s in first.statistics("filename"))
    rss = [next((s.rss_mb for s in samples if s.processed >= at), float("nan")) for at in (snapshots.at[0],
                                                                                            snapshots.at[-1])]
    return {"images": [snapshots.at[0], snapshots.at[-1]], "traced_python_kb": traced / 1024,
            "traced_bytes_per_image": traced / images, "rss_mb": rss, "lines": lines,
            "traced_mb": [opening["traced"] / 2**20, closing["traced"] / 2**20],
            "mappings_kb": {kind: [opening["mappings_kb"].get(kind, 0), closing["mappings_kb"].get(kind, 0)]
                            for kind in sorted(set(opening["mappings_kb"]) | set(closing["mappings_kb"]))},
            "malloc_trim": [opening["trim"], closing["trim"]],
            "traced_peak_mb": [opening["traced_peak"] / 2**20, closing["traced_peak"] / 2**20],
            "object_types": [{"type": name, "more": more, "per_image": more / images} for name, more in types]}


def stop_watcher(process: subprocess.Popen[bytes], grace_s: float = 120.0) -> None:
    """SIGTERM (the watcher finishes what it took in), then SIGKILL if it has not exited in `grace_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def soak(args: argparse.Namespace, model: Path, pool: list[Any], work: Path) -> dict[str, Any]:
    """Feed the watcher and sample it until it exits; the samples, the feed and how the run ended."""
    watched, results, traces = work / "soak-in", work / "soak-results", work / "soak-traces"
    for folder in (watched, results, traces):
        if folder.exists():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    watched.mkdir(parents=True)
    command = watch_command(args, model, watched, results, traces)
    log_path = work / "soak-watch.log"
    say(f"watcher: {shlex.join(command)}")
    count = ResultCount(results)
    feeder = SoakFeeder(pool, watched, results, args.files, args.rate, args.ahead)
    samples: list[Sample] = []
    started = fed_at = time.monotonic()
    ended = "all files analysed"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        snapshots = Snapshots(traces, process.pid)
        try:
            while not (results / "results.db").exists() and process.poll() is None:
                time.sleep(0.05)  # the model is loaded and RESULTS opened: the watcher is ready
            time.sleep(0.5)
            feeder.start()
            fed_at = time.monotonic()
            say(f"feeding {args.files} files into {watched}" + (f" at {args.rate:g}/s" if args.rate else "")
                + f", at most {args.ahead} waiting")
            last_change, last_count, next_report, tick = time.monotonic(), -1, time.monotonic() + 30, fed_at
            while process.poll() is None:
                now_count = count()
                reading = sample(process.pid, fed_at, now_count, feeder.is_alive())
                if reading is not None:
                    samples.append(reading)
                if now_count != last_count:
                    last_count, last_change = now_count, time.monotonic()
                if args.tracemalloc and snapshots.taken == 0 and now_count >= args.warmup_fraction * args.files:
                    snapshots.take(now_count)
                if args.max_minutes and time.monotonic() - fed_at > 60 * args.max_minutes and not feeder.stop.is_set():
                    say(f"--max-minutes {args.max_minutes:g} reached after {feeder.fed} files: stopping the feed")
                    feeder.stop.set()
                    ended = f"--max-minutes {args.max_minutes:g}: fed {feeder.fed} of {args.files}"
                all_done = not feeder.is_alive() and now_count >= feeder.fed
                if args.tracemalloc and snapshots.taken == 1 and (now_count >= 0.95 * args.files or all_done):
                    snapshots.take(now_count)  # before the watcher exits at --max-files
                if all_done and (feeder.stop.is_set() or time.monotonic() - last_change > 30):
                    if not feeder.stop.is_set():
                        ended = "the watcher did not exit after the last result: stopped"
                    stop_watcher(process)
                    break
                if time.monotonic() - last_change > STALL_S and now_count < feeder.fed:
                    ended = f"stalled: no new result for {STALL_S:g} s at {now_count} of {feeder.fed} fed"
                    say(ended)
                    stop_watcher(process)
                    break
                if time.monotonic() >= next_report and reading is not None:
                    say(f"  {now_count} analysed, RSS {reading.rss_mb:.1f} MB")
                    next_report += 30
                tick += args.interval
                time.sleep(max(0.0, tick - time.monotonic()))
            code = process.wait()
        finally:
            feeder.stop.set()
            stop_watcher(process)
    feeder.join(timeout=10)
    final = count()
    count.close()
    if feeder.error is not None:
        raise RuntimeError(f"writing into {watched} failed: {feeder.error}")
    if code != 0:
        ended = f"watcher exit {code} ({ended}); see {log_path}"
    tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
    run = {"exit": code, "analysed": final, "ended": ended, "wall_s": round(time.monotonic() - started, 1),
           "feed_s": round((feeder.last_at or time.time()) - (feeder.first_at or time.time()), 1),
           "files_fed": feeder.fed, "states": count.states(), "log_tail": tail, "watch_command": shlex.join(command)}
    if args.tracemalloc:
        run["growth"] = growth(snapshots, samples)
    return {"run": run, "samples": samples}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hep2edge.imageio import read_image

    size = size_of(args)
    with work_folder(args) as work:
        models = resolve_models(args, work, precisions=("fp32",))
        if "fp32" not in models.onnx:
            raise SystemExit(f"no fp32 ONNX model in {models.folder}: {models.missing.get('fp32', 'not exported')}")
        model = models.onnx["fp32"]
        pool = [read_image(path) for path in synth_pool(pool_folder(work, args), args.pool_images, size, args.seed)]
        measured = soak(args, model, pool, work)
    samples: list[Sample] = measured["samples"]
    found = figures(samples, args.warmup_fraction, args.flat_kb)
    found["processed"] = measured["run"]["analysed"]
    say(f"{found['processed']} analysed; RSS warm-up {fmt(found['rss_mb']['warmup'])} MB, end "
        f"{fmt(found['rss_mb']['end'])} MB; slope {fmt(found['slope_kb_per_image'], 3)} kB/image ({found['verdict']})")
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "models": models.to_dict(), "model": str(model), "backend": args.backend, "device": args.device,
            "image_size": list(size), "tile": models.contract().tile,
            "tiles_per_image": tiles_per_image(size, models.contract().tile),
            "dtype": str(pool[0].dtype), "files": args.files, "rate": args.rate, "ahead": args.ahead,
            "settle_ms": args.settle_ms, "interval_s": args.interval, "warmup_fraction": args.warmup_fraction,
            "tracemalloc": args.tracemalloc, **measured["run"], **found, "samples": as_rows(samples)}


def markdown(data: dict[str, Any]) -> str:
    env, rss, speed = data["environment"], data["rss_mb"], data["images_s"]
    cores = data["cpu_percent"] / 100 if data["cpu_percent"] is not None else None
    rate = f", at most {data['rate']:g} per second" if data["rate"] else ""
    second = data["slope"]["second_half"]
    h, w = data["image_size"]
    lines = [f"# Soak: `hep2edge watch` over {data['processed']:,} images on {data['machine']} ({data['date']})", "",
             f"`{data['command']}` ({data['started']})", "",
             f"CPU: {env.get('cpu')} ({env.get('cpus_usable')} of {env.get('cpus')} cores usable); GPU: "
             f"{', '.join(env.get('gpus') or ['none'])}; Python {env.get('python')}; "
             + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()), "",
             f"Watcher: `{data['watch_command']}`", "",
             f"{data['files']:,} unique synthetic {h} x {w} {data['dtype']} TIFFs ({data['tiles_per_image']} tiles of "
             f"{data['tile']} px; {data.get('models', {}).get('description') or data['model']}), each written under a "
             f"hidden name and renamed into the watched folder, at most {data['ahead']} waiting for a result{rate}. "
             f"RSS (VmRSS of the watcher process) and results.db rows sampled every {data['interval_s']:g} s. "
             f"Run: {data['ended']}; {data['files_fed']:,} files fed, {data['wall_s']:,.0f} s in all.", ""]
    if data["tracemalloc"]:
        lines += ["**Diagnosis run under tracemalloc: its RSS includes tracemalloc's own bookkeeping.**", ""]
    rows = [["images analysed", f"{data['processed']:,}"],
            [f"RSS after warm-up ({fmt(data['warmup_images'], 0)} images)", fmt(rss["warmup"], 1, " MB")],
            [f"RSS at the end of the feed ({fmt(data['end_images'], 0)} images)", fmt(rss["end"], 1, " MB")],
            ["peak RSS (VmHWM)", fmt(rss["peak"], 1, " MB")],
            [f"slope, second half ({fmt(second['from_images'], 0)}-{fmt(second['to_images'], 0)} images)",
             fmt(data["slope_kb_per_image"], 3, " kB/image")],
            ["slope after warm-up", fmt(data["slope"]["after_warmup"]["kb_per_image"], 3, " kB/image")],
            ["growth per 100,000 images at that slope", fmt(data["growth_mb_per_100k_images"], 1, " MB")],
            ["verdict", f"**{data['verdict']}** (plateau: under {data['flat_kb']:g} kB/image)"],
            ["images/s after warm-up", fmt(speed["after_warmup"], 2)],
            ["images/s, first half / second half", f"{fmt(speed['first_half'], 2)} / {fmt(speed['second_half'], 2)}"],
            ["watcher CPU (cores busy)", fmt(cores, 2)],
            ["threads, warm-up / end", f"{data['threads']['warmup']} / {data['threads']['end']}"],
            ["open files, warm-up / end", f"{data['fds']['warmup']} / {data['fds']['end']}"],
            ["journal states", ", ".join(f"{k} {v:,}" for k, v in sorted(data["states"].items())) or "-"]]
    lines.append(markdown_table(["figure", "value"], rows, right=(1,)))
    if data.get("growth"):
        lines += growth_markdown(data["growth"])
    if data.get("notes"):  # findings added to the result file after the run (experiments outside this script)
        lines += ["", "### Notes (added after the run)", "", *(f"- {note}" for note in data["notes"])]
    if data.get("plot"):
        lines += ["", f"![RSS and images/s against images processed]({data['plot']})"]
    return "\n".join(lines) + "\n"


def growth_markdown(found: dict[str, Any]) -> list[str]:
    if "error" in found:
        return ["", f"tracemalloc: {found['error']}"]
    a, b = found["images"]
    out = ["", f"### What grew between image {a:,} and image {b:,} (tracemalloc, live Python memory)", "",
           f"Traced Python memory grew {found['traced_python_kb']:,.0f} kB ({found['traced_bytes_per_image']:,.0f} "
           f"bytes/image); RSS went {fmt(found['rss_mb'][0], 1)} -> {fmt(found['rss_mb'][1], 1)} MB. Live traced "
           f"memory {fmt(found['traced_mb'][0], 1)} -> {fmt(found['traced_mb'][1], 1)} MB; its peak in between "
           f"{fmt(found['traced_peak_mb'][1], 1)} MB (before warm-up: {fmt(found['traced_peak_mb'][0], 1)} MB; a "
           "peak far above the live figure is a transient working set).", "",
           markdown_table(["allocated at (innermost frame)", "via hep2edge", "kB", "bytes/image", "blocks"],
                          [[line["where"], line["via"], fmt(line["kb"], 1), fmt(line["bytes_per_image"], 1),
                            line["blocks"]] for line in found["lines"]], right=(2, 3, 4)),
           "", "Resident memory per kind of mapping (/proc/self/smaps; `malloc_trim(0)` after each snapshot hands "
           "freed-but-kept allocator memory back, so the second column is what accumulated after the first trim):",
           "", markdown_table(["mapping", "after warm-up kB", "at the end kB", "grew kB"],
                              [[kind, f"{a:,}", f"{b:,}", f"{b - a:,}"] for kind, (a, b) in found["mappings_kb"].items()
                               if max(a, b) >= 1024], right=(1, 2, 3)),
           "", "malloc_trim(0): " + "; ".join(
               f"at image {at:,}: VmRSS {fmt(t['rss_kb'] / 1024, 1)} -> {fmt((t['after_trim_kb'] or 0) / 1024, 1)} MB"
               for at, t in zip(found["images"], found["malloc_trim"])) + ".",
           "", markdown_table(["object type", "more objects", "per image"],
                              [[t["type"], f"{t['more']:,}", fmt(t["per_image"], 3)] for t in found["object_types"]],
                              right=(1, 2))]
    return out


def plot(data: dict[str, Any], path: Path) -> bool:
    """RSS (MB) and images/s against images processed, with the second-half fit and the warm-up point."""
    from benchlib.plots import _pyplot
    from benchlib.soak import from_rows

    samples = from_rows(data["samples"])
    plt = _pyplot() if len(samples) > 1 else None
    if plt is None:
        return False
    fig, (memory, speed) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    x = [s.processed for s in samples]
    fed = [i for i, s in enumerate(samples) if s.feeding]
    memory.plot([x[i] for i in fed], [samples[i].rss_mb for i in fed], lw=1, label="RSS (VmRSS) while fed")
    drain = [s for s in samples if not s.feeding]
    if drain:
        memory.plot([s.processed for s in drain], [s.rss_mb for s in drain], ".", color="grey", ms=3,
                    label="after the feed (drain, shutdown)")
    fit = data["slope"]["second_half"]
    if fit["kb_per_image"] is not None and fit["intercept_mb"] is not None:
        ends = [fit["from_images"], fit["to_images"]]
        memory.plot(ends, [fit["intercept_mb"] + fit["kb_per_image"] * e / 1024 for e in ends], "r--",
                    label=f"second-half fit: {fit['kb_per_image']:.3f} kB/image")
    if data["warmup_images"]:
        memory.axvline(data["warmup_images"], color="grey", ls=":", label="end of warm-up")
    memory.set_ylabel("resident memory (MB)")
    memory.legend(fontsize="small", loc="lower right")
    memory.grid(alpha=0.3)
    speed.plot(x, rates(samples), lw=1)
    speed.set_ylabel("images / s (5 s window)")
    speed.set_xlabel("images processed")
    speed.set_ylim(bottom=0)
    speed.grid(alpha=0.3)
    fig.suptitle(f"hep2edge watch soak on {data['machine']}: {data['processed']:,} images of "
                 f"{data['image_size'][0]}x{data['image_size'][1]}", fontsize="medium")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    section = run(args)
    env = environment()
    data = {"machine": env["machine"], "date": today(), "environment": env, **section}
    name = "soak-tracemalloc" if args.tracemalloc else "soak"
    json_path = result_path(args.out, f"{machine_name(with_gpu=True)}-{name}")
    if plot(data, json_path.with_suffix(".png")):
        data["plot"] = json_path.with_suffix(".png").name
    written, md = write_json_md(json_path, data, markdown(data))
    say(f"wrote {written}, {md}" + (f" and {data['plot']}" if data.get("plot") else ""))
    print(markdown(data))
    return 0 if section["exit"] == 0 and section["processed"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
