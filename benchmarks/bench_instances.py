"""Per-cell post-processing on the host: instances from the mask + distance maps, then one record per cell.

    python benchmarks/bench_instances.py [--quick] [--out DIR] [--size 1040x1388] [--cells 200] [--repeats 30]
        [--warmup 3] [--tile 384] [--seed 0]

A synthetic field of touching ellipses (deterministic), its perfect distance map (`distance_target`), a
per-pixel softmax pattern map with each cell's own pattern boosted and a gray image. Timed after --warmup
untimed calls, --repeats calls each (wall clock, this process's threads): `instances_from_maps` (float and
uint8 distance), `connected_instances`, `cell_records` without and with the pattern map (float32 and uint8),
`post_processing_numpy` (the reference: instances_from_maps + cell_records on uint8 maps, as the runtime's writers
get them), the same three through the compiled cell kernels where numba is installed (`post_processing_numba`:
the runtime's path; budget p50 <= 15 ms per field), and `distance_target` on the field and on one --tile
training tile. Also: cells found against the true count, how many cells got their boosted pattern and where the
compiled cells agree with the reference. Writes its own
`<machine>-instances-host-<date>.json` / `.md` into --out.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from benchlib.cli import parse, say
from benchlib.results import RESULTS, command_line, environment, machine_name, result_path, today, write_json_md
from benchlib.stats import summarize
from benchlib.tables import fmt, markdown_table, verdict
from benchlib.timing import Budget, time_calls

from hep2edge.cell_kernels import cell_kernels
from hep2edge.cell_records import cell_records
from hep2edge.instances import InstanceParams, connected_instances, distance_target, instances_from_maps
from hep2edge.labels import PATTERNS
from hep2edge.row_bands import thread_count

QUICK = {"size": "256x384", "cells": 20, "repeats": 5, "warmup": 1, "tile": 128}
BUDGET_MS = 15.0
FIELD = (1040, 1388)  # the budget's field size


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--quick", action="store_true", help="a small field, few repeats")
    parser.add_argument("--size", default="1040x1388", help="field size HEIGHTxWIDTH")
    parser.add_argument("--cells", type=int, default=200, help="ellipses in the field")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each step")
    parser.add_argument("--tile", type=int, default=384, help="training tile size for distance_target")
    parser.add_argument("--seed", type=int, default=0)
    return parse(parser, argv, QUICK)


def ellipse_field(size: tuple[int, int], cells: int, seed: int) -> np.ndarray:
    """(H, W) int32 labels: `cells` ellipses on a jittered grid, neighbours often touching (later ones on top)."""
    height, width = size
    rng = np.random.default_rng(seed)
    rows = max(1, round((cells * height / width) ** 0.5))
    cols = -(-cells // rows)
    step_y, step_x = height / rows, width / cols
    labels = np.zeros(size, np.int32)
    for cell in range(cells):
        row, col = divmod(cell, cols)
        center = ((col + 0.5 + rng.uniform(-0.25, 0.25)) * step_x, (row + 0.5 + rng.uniform(-0.25, 0.25)) * step_y)
        axes = (rng.uniform(0.3, 0.45) * step_x, rng.uniform(0.3, 0.45) * step_y)
        cv2.ellipse(labels, (round(center[0]), round(center[1])), (round(axes[0]), round(axes[1])),
                    float(rng.uniform(0, 180)), 0, 360, cell + 1, -1)
    return labels


def pattern_field(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(8, H, W) float32 softmax over noisy logits, each cell's own pattern and the background boosted; the truth."""
    rng = np.random.default_rng(seed + 1)
    truth = rng.integers(0, len(PATTERNS), labels.max() + 1)
    logits = rng.normal(0.0, 1.0, (len(PATTERNS) + 1, *labels.shape)).astype(np.float32)
    inside = labels > 0
    rows, cols = np.nonzero(inside)
    logits[1 + truth[labels[inside]], rows, cols] += 1.5
    logits[0][~inside] += 4.0
    logits = np.exp(logits - logits.max(axis=0))
    return (logits / logits.sum(axis=0)).astype(np.float32), truth


def gray_field(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 image: a per-cell brightness plus noise on a dark background."""
    rng = np.random.default_rng(seed + 2)
    level = rng.uniform(60, 220, labels.max() + 1)
    level[0] = 15
    return np.clip(level[labels] + rng.normal(0, 8, labels.shape), 0, 255).astype(np.uint8)


def timed(name: str, call: Callable[[], object], args: argparse.Namespace) -> dict[str, float]:
    budget = Budget(warmup=args.warmup, min_iters=args.repeats, min_seconds=0.0, max_seconds=120.0,
                    max_iters=args.repeats)
    stats = summarize(time_calls(lambda _: call(), budget))
    say(f"{name}: p50 {stats['p50']:.2f} ms, p95 {stats['p95']:.2f} ms")
    return stats


def run(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()[0]
    height, width = (int(v) for v in args.size.lower().split("x"))
    size = (height, width)
    say(f"a {size[0]} x {size[1]} field of {args.cells} ellipses, seed {args.seed}")
    truth = ellipse_field(size, args.cells, args.seed)
    mask, params = truth > 0, InstanceParams()
    distance = distance_target(truth)
    distance8 = np.round(distance * 255).astype(np.uint8)
    probs, patterns = pattern_field(truth, args.seed)
    probs8 = np.round(probs * 255).astype(np.uint8)
    gray = gray_field(truth, args.seed)
    labels = instances_from_maps(mask, distance, params)
    tile = np.ascontiguousarray(truth[:args.tile, :args.tile])
    steps = {
        "instances_from_maps": lambda: instances_from_maps(mask, distance, params),
        "instances_from_maps_uint8": lambda: instances_from_maps(mask, distance8, params),
        "connected_instances": lambda: connected_instances(mask, params.min_area),
        "cell_records": lambda: cell_records(labels, gray),
        "cell_records_pattern": lambda: cell_records(labels, gray, probs),
        "cell_records_pattern_uint8": lambda: cell_records(labels, gray, probs8),
        "post_processing_numpy": lambda: cell_records(instances_from_maps(mask, distance8, params), gray, probs8),
        "distance_target_field": lambda: distance_target(truth),
        "distance_target_tile": lambda: distance_target(tile),
    }
    compiled = cell_kernels("auto")
    if compiled.name != "numpy":
        compiled.warm_up()
        steps.update({
            f"instances_{compiled.name}_uint8": lambda: compiled.instances(mask, distance8, params),
            f"cell_records_pattern_{compiled.name}_uint8": lambda: compiled.records(labels, gray, probs8),
            f"post_processing_{compiled.name}": lambda: compiled.cells(mask, distance8, gray, probs8, params)})
    timings = {name: timed(name, call, args) for name, call in steps.items()}
    records = cell_records(labels, gray, probs)
    right = sum(r["pattern"] == PATTERNS[patterns[_majority(truth, labels, r["id"])]] for r in records)
    fast_labels = compiled.cells(mask, distance8, gray, probs8, params)[0]
    budget_row = f"post_processing_{compiled.name}"
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "size": list(size),
            "true_cells": int(len(np.unique(truth)) - 1), "tile": args.tile,
            "tile_cells": int(len(np.unique(tile)) - 1), "repeats": args.repeats, "warmup": args.warmup,
            "params": params.to_dict(), "cv2_threads": cv2.getNumThreads(),
            "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
            "found": {"instances_from_maps": int(labels.max()), compiled.name: int(fast_labels.max()),
                      "connected_instances": int(connected_instances(mask, params.min_area).max())},
            "kernels": compiled.name, "threads": thread_count(),
            "agreement": round(float(np.mean(fast_labels[mask] == labels[mask])), 4),
            "pattern_right": int(right), "budget_ms": BUDGET_MS, "budget_row": budget_row, "timings_ms": timings,
            "verdict": verdict(timings[budget_row]["p50"] if size == FIELD else None, BUDGET_MS,
                               higher_is_better=False)}


def _majority(truth: np.ndarray, labels: np.ndarray, cell: int) -> int:
    """The true cell most of a found cell's pixels belong to."""
    return int(np.bincount(truth[labels == cell]).argmax())


def markdown(data: dict[str, Any]) -> str:
    h, w = data["size"]
    found = data["found"]
    lines = [f"# Instance post-processing on {data['machine']} ({data['date']})", "",
             f"`{data['command']}` ({data['started']})", "",
             f"CPU: {data['environment'].get('cpu')} ({data['environment'].get('cpus_usable')} cores usable, "
             f"OpenCV threads {data['cv2_threads']}); Python {data['environment'].get('python')}; 1-minute load "
             f"average {data['load_average'][0]} at the start, {data['load_average'][1]} at the end (other work on "
             "the machine slows every step).", "",
             f"A synthetic {h} x {w} field of {data['true_cells']} ellipses (many touching), its perfect distance "
             f"map, a float32 softmax pattern map; {data['repeats']} timed calls per step after {data['warmup']} "
             f"warm-up calls. Params {data['params']}.", "",
             markdown_table(["step", "p50 ms", "p95 ms", "min ms"],
                            [[k, fmt(v["p50"], 2), fmt(v["p95"], 2), fmt(v["min"], 2)]
                             for k, v in data["timings_ms"].items()], right=(1, 2, 3)), "",
             f"Budget: post-processing as the runtime runs it (`{data['budget_row']}`: cells + records with the "
             f"pattern map, uint8 maps, {data['kernels']} kernels, {data['threads']} threads) p50 <= "
             f"{fmt(data['budget_ms'], 0)} ms per {FIELD[0]} x {FIELD[1]} field: **{data['verdict']}** "
             f"({fmt(data['timings_ms'][data['budget_row']]['p50'], 1)} ms for this {h} x {w} field; the numpy "
             f"reference: {fmt(data['timings_ms']['post_processing_numpy']['p50'], 1)} ms).", "",
             f"Cells found: {found['instances_from_maps']} by instances_from_maps, {found[data['kernels']]} by the "
             f"{data['kernels']} kernels (the same label on {data['agreement']:.2%} of the mask's pixels), "
             f"{found['connected_instances']} by connected_instances (touching cells merged), of "
             f"{data['true_cells']}; {data['pattern_right']} got their boosted pattern. distance_target tile: "
             f"{data['tile']} px, {data['tile_cells']} cells."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    section = run(args)
    env = environment()
    data = {"machine": env["machine"], "date": today(), "environment": env, **section}
    written, md = write_json_md(result_path(args.out, f"{machine_name(with_gpu=True)}-instances-host"), data,
                                markdown(data))
    say(f"wrote {written} and {md}")
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
