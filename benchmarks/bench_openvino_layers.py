"""Where OpenVINO spends one whole-field pass on this CPU: time per layer type and kernel, per precision's file.

    python benchmarks/bench_openvino_layers.py [--quick] [--models DIR] [--work W] [--precisions fp32,int8]
        [--repeats 3]

Compiles each ONNX file for CPU (f32 hint: the int8 file's Q/DQ layers run as int8 where the CPU has kernels
for them) at the padded field size, runs it with PERF_COUNT on, and sums the per-node times of the median run
by (layer type, kernel). The kernel names say what the CPU really ran (`jit_avx2_1x1_I8`: int8 on AVX2;
`brgconv_avx512_amx`: AMX): the explanation behind the int8 rows of bench_backends. Writes `openvino-layers`.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.cli import add_common, parse, resolve_models, say, size_of, work_folder
from benchlib.results import command_line, cpu_model, publish_section
from benchlib.tables import fmt, markdown_table

QUICK = {"repeats": 2, "precisions": "fp32,int8"}
SHOWN = 12  # rows per precision in the Markdown table (the JSON keeps all)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser)
    parser.add_argument("--precisions", default="fp32,int8", help="which exported files to profile")
    parser.add_argument("--repeats", type=int, default=3, help="profiled runs per file (the median is kept)")
    return parse(parser, argv, QUICK)


def profile(path: Path, shape: tuple[int, int, int, int], repeats: int) -> dict[str, Any]:
    """Total ms of the median run and its per-(type, kernel) sums, sorted by time."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): list(shape)})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_PRECISION_HINT": "f32",
                                                 "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    field = np.random.default_rng(0).random(shape, dtype=np.float32)
    request.infer({0: field})  # warm-up
    runs = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        request.infer({0: field})
        wall = (time.perf_counter() - started) * 1000
        layers: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        for node in request.get_profiling_info():
            entry = layers[(node.node_type, node.exec_type)]
            entry[0] += node.real_time.total_seconds() * 1000
            entry[1] += 1
        runs.append((wall, layers))
    wall, layers = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    rows = [{"layer": kind, "kernel": kernel, "ms": ms, "count": int(count)}
            for (kind, kernel), (ms, count) in layers.items() if ms > 0]
    return {"wall_ms": wall, "rows": sorted(rows, key=lambda row: -row["ms"])}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from hep2edge.runtime.field import field_shape

    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    models = resolve_models(args, work, precisions)
    contract = models.contract()
    height, width = field_shape(*size_of(args), contract.field_stride)
    shape = (1, contract.channels, height, width)
    files = {}
    for precision in precisions:
        if precision not in models.onnx:
            files[precision] = {"skipped": models.missing.get(precision, "not exported")}
            continue
        say(f"profiling {models.onnx[precision].name} on a {width} x {height} field")
        files[precision] = {"file": models.onnx[precision].name, **profile(models.onnx[precision], shape, args.repeats)}
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_model(),
            "models": models.to_dict(), "field": [height, width], "files": files}


def markdown(section: dict[str, Any]) -> str:
    height, width = section["field"]
    lines = ["## OpenVINO per layer type and kernel, one whole-field pass", "",
             f"`{section['command']}` ({section['started']})", "",
             f"Model: {section['models'].get('description')}. CPU: {section['cpu']}. One {width} x {height} "
             "padded field, f32 hint, PERF_COUNT on; the median of the profiled runs. The kernel says what ran "
             "(`_I8`: int8, `f32`: float).", ""]
    for precision, data in section["files"].items():
        if "skipped" in data:
            lines += [f"**{precision}**: not profiled ({data['skipped']})", ""]
            continue
        lines += [f"**{precision}** (`{data['file']}`): {fmt(data['wall_ms'], 0)} ms per field", "",
                  markdown_table(["layer", "kernel", "nodes", "ms", "share"],
                                 [[r["layer"], f"`{r['kernel']}`", r["count"], fmt(r["ms"], 1),
                                   f"{100 * r['ms'] / data['wall_ms']:.0f} %"] for r in data["rows"][:SHOWN]],
                                 right=(2, 3, 4)), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with work_folder(args) as work:
        section = run(args, work)
    return publish_section(args.out, "openvino-layers", section, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
