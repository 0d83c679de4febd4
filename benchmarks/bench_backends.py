"""Latency, throughput and peak memory of every available backend x precision x batch.

    python benchmarks/bench_backends.py [--quick] [--out DIR] [--models DIR] [--batches 1,15,32]
        [--devices auto|cpu|cuda|cpu,cuda] [--backends onnxruntime,openvino,torch,tensorrt]
        [--precisions fp32,fp16,int8]

Each cell opens the backend with max batch = the batch, runs warm-up calls, then times `Backend.infer` on
real normalised tiles of synthetic 1040 x 1388 fields (host batch in, host arrays out: H2D, compute and D2H,
synchronised) until the budget is spent. Writes the `backends` section of
benchmarks/results/<machine>-<date>.json/.md and a throughput + latency plot (PNG).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchlib import devices
from benchlib.choice import Choice
from benchlib.cli import add_common, engine_profile, parse, pool_folder, resolve_models, say, size_of, work_folder
from benchlib.data import synth_pool, tiles_per_image
from benchlib.isolated import run_isolated, worker
from benchlib.models import ModelSet
from benchlib.results import command_line, publish_section
from benchlib.tables import fmt, markdown_table
from benchlib.timing import Budget

QUICK = {"batches": "1,6,12", "budget": "quick"}
FIELD_BACKENDS = ("onnxruntime", "openvino")
CPU_NOTE = ("fp16 and INT8 ONNX on a CPU: those graphs are shaped for TensorRT (AutoCast fp16, Q/DQ INT8 with "
            "fp16 elsewhere) and ONNX Runtime's CPU provider runs them slower than fp32; they are timed as "
            "shipped, not re-exported for CPU speed.")


@dataclass
class Cell:
    """One way to run the model: backend, device, precision and options (or why it cannot run here)."""

    backend: str
    device: str
    precision: str
    variant: str = ""
    model: Path | None = None
    channels_last: bool = False
    cuda_graph: bool = False
    skip: str = ""
    hint: str = "auto"  # openvino precision hint
    inference: str = "tiles"  # field: one whole-field pass per call (runtime/field.py)

    def label(self) -> str:
        return " ".join(p for p in (self.backend, self.device, self.precision, self.variant) if p)

    def as_field(self) -> Cell:
        """The same cell timing whole-field passes (models exported before them have no field outputs)."""
        return replace(self, variant=" ".join(v for v in (self.variant, "whole field") if v), inference="field")

    def choice(self) -> Choice:
        assert self.model is not None
        return Choice(self.backend, self.model, self.precision, self.device, self.cuda_graph, self.channels_last,
                      hint=self.hint)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser)
    parser.add_argument("--batches", default="1,15,32", help="tiles per call, comma-separated")
    parser.add_argument("--devices", default="auto",
                        help="auto (cuda where a GPU is, else cpu) | cpu | cuda | cpu,cuda")
    parser.add_argument("--backends", default="onnxruntime,openvino,torch,tensorrt")
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--budget", default="auto", help="auto (by device) | cpu | cuda | quick")
    parser.add_argument("--warmup", type=int, default=None, help="override the budget's warm-up calls")
    parser.add_argument("--min-iters", type=int, default=None)
    parser.add_argument("--min-seconds", type=float, default=None)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--pool-images", type=int, default=4, help="synthetic fields whose tiles are timed")
    parser.add_argument("--field", action=argparse.BooleanOptionalAction, default=True,
                        help="also time whole-field passes (--inference field) on the CPU backends")
    return parse(parser, argv, QUICK)


def parse_batches(text: str) -> list[int]:
    return [int(b) for b in str(text).split(",") if b.strip()]


def resolve_devices(text: str) -> list[str]:
    if text == "auto":
        return ["cuda"] if devices.torch_cuda().ok or devices.any_gpu() else ["cpu"]
    return [d.strip() for d in text.split(",") if d.strip()]


def onnxruntime_cells(models: ModelSet, device: str, precisions: list[str]) -> list[Cell]:
    if device == "cuda" and not devices.onnxruntime_cuda().ok:
        return [Cell("onnxruntime", device, "all", skip=devices.onnxruntime_cuda().reason)]
    return [Cell("onnxruntime", device, p, model=models.onnx.get(p),
                 skip="" if p in models.onnx else models.missing.get(p, "no ONNX file for this precision"))
            for p in precisions]


def openvino_cells(models: ModelSet, device: str, precisions: list[str]) -> list[Cell]:
    """Each ONNX file under OpenVINO on the CPU, at the f32 hint and (where the CPU computes it) bf16."""
    if device != "cpu":
        return []
    if not devices.openvino().ok:
        return [Cell("openvino", device, "all", skip=devices.openvino().reason)]
    bf16 = "" if devices.native_bf16() else "this CPU has no native bf16 (AVX-512 BF16 / AMX)"
    cells = []
    for p in precisions:
        missing = "" if p in models.onnx else models.missing.get(p, "no ONNX file for this precision")
        cells += [Cell("openvino", device, p, "f32 hint", models.onnx.get(p), skip=missing, hint="f32"),
                  Cell("openvino", device, p, "bf16 hint", models.onnx.get(p), skip=missing or bf16, hint="bf16")]
    return cells


def torch_cells(models: ModelSet, device: str, precisions: list[str]) -> list[Cell]:
    if models.checkpoint is None:
        return [Cell("torch", device, "all", skip="no checkpoint in the model folder")]
    if devices.torch_cuda().reason.startswith("torch is not installed"):
        return [Cell("torch", device, "all", skip=devices.torch_cuda().reason)]
    if device == "cpu":
        return [Cell("torch", "cpu", "fp32", "eager", models.checkpoint)]
    if not devices.torch_cuda().ok:
        return [Cell("torch", device, "all", skip=devices.torch_cuda().reason)]
    cells = [Cell("torch", "cuda", "fp32", "eager", models.checkpoint)]
    if "fp16" in precisions:  # the TensorRT stand-in: fp16 weights, channels_last, then CUDA graph replay
        cells.append(Cell("torch", "cuda", "fp16", "channels_last", models.checkpoint, channels_last=True))
        cells.append(Cell("torch", "cuda", "fp16", "channels_last + CUDA graph", models.checkpoint,
                          channels_last=True, cuda_graph=True))
    return cells


def tensorrt_cells(models: ModelSet, device: str, precisions: list[str]) -> list[Cell]:
    if device != "cuda":
        return []
    if not devices.tensorrt().ok:
        return [Cell("tensorrt", device, "all", skip=devices.tensorrt().reason)]
    cells = []
    for p in precisions:
        engine = models.engines.get(p)
        why = "" if engine else models.missing.get(p, f"no model.{p}.engine in the model folder")
        cells += [Cell("tensorrt", device, p, "", engine, skip=why),
                  Cell("tensorrt", device, p, "CUDA graph", engine, cuda_graph=True, skip=why)]
    return cells


def plan_cells(models: ModelSet, args: argparse.Namespace) -> list[Cell]:
    planners = {"onnxruntime": onnxruntime_cells, "openvino": openvino_cells, "torch": torch_cells,
                "tensorrt": tensorrt_cells}
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    chosen = resolve_devices(args.devices)
    cells: list[Cell] = []
    for device in chosen:
        for name in names:
            cells += planners[name](models, device, precisions)
    if args.field:  # whole-field passes on the CPU backends (the GPU runs them through its engine profile)
        cells += [cell.as_field() for cell in cells if cell.device == "cpu" and cell.backend in FIELD_BACKENDS]
    return cells + unmeasured_devices(chosen, names)


def unmeasured_devices(chosen: list[str], names: list[str]) -> list[Cell]:
    """Skipped rows that say why a device was left out (so the table shows what was not measured)."""
    rows = []
    if "cuda" not in chosen:
        why = "no GPU on this machine" if not devices.any_gpu() else "--devices leaves cuda out"
        for name in (n for n in names if n not in ("onnxruntime", "openvino")):
            extra = f"; {devices.tensorrt().reason}" if name == "tensorrt" and not devices.tensorrt().ok else ""
            rows.append(Cell(name, "cuda", "all", skip=why + extra))
    if "cpu" not in chosen:
        rows += [Cell(name, "cpu", "all", skip="a GPU machine measures its GPU; --devices cpu,cuda adds CPU rows")
                 for name in names if name != "tensorrt"]
    return rows


def budget_for(args: argparse.Namespace, device: str) -> Budget:
    name = device if args.budget == "auto" else args.budget
    return Budget.named(name, warmup=args.warmup, min_iters=args.min_iters, min_seconds=args.min_seconds,
                        max_seconds=args.max_seconds)


def run_cell(cell: Cell, batch: int, inputs: dict[str, Any], args: argparse.Namespace,
             per_image: int) -> dict[str, Any]:
    """One row: measured in a fresh process (see benchlib.isolated), or skipped with the reason."""
    row: dict[str, Any] = {"backend": cell.backend, "device": cell.device, "precision": cell.precision,
                           "variant": cell.variant, "batch": batch, "inference": cell.inference}
    if cell.skip:
        return {**row, "status": "skipped", "reason": cell.skip}
    budget = budget_for(args, cell.device)
    say(f"{cell.label()} batch {batch}: measuring ({budget.warmup} warm-up, >= {budget.min_iters} calls)")
    spec = {**inputs, "choice": cell.choice().to_dict(), "batch": batch, "budget": budget.to_dict(),
            "inference": cell.inference}
    row.update(run_isolated(Path(__file__), spec, timeout_s=10 * budget.max_seconds + 300))
    if row["status"] != "ok":
        say(f"  failed: {row['reason']}")
        return row
    row["images_s"] = row["patches_s"] / per_image
    row["budget"] = budget.to_dict()
    lat = row["latency_ms"]
    say(f"  p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms (n {lat['n']}), {row['patches_s']:.1f} patches/s")
    return row


def cpu_speedup(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """images/s of the fastest CPU row over ONNX Runtime fp32 at the same batch, measured in this run."""
    ok = [r for r in rows if r.get("status") == "ok" and r["device"] == "cpu"]
    base = {r["batch"]: r for r in ok
            if (r["backend"], r["precision"], r.get("inference", "tiles")) == ("onnxruntime", "fp32", "tiles")}
    pairs = [(r, base[r["batch"]]) for r in ok if r["batch"] in base]
    if not pairs:
        return None
    best, baseline = max(pairs, key=lambda pair: pair[0]["images_s"] / pair[1]["images_s"])
    label = " ".join(x for x in (best["backend"], best["precision"], best["variant"]) if x)
    return {"best": label, "batch": best["batch"], "images_s": best["images_s"], "p50_ms": best["latency_ms"]["p50"],
            "baseline": "onnxruntime fp32 tiles", "baseline_images_s": baseline["images_s"],
            "speedup": best["images_s"] / baseline["images_s"]}


def batches_of(cell: Cell, args: argparse.Namespace, per_image: int) -> list[int]:
    """The batches a cell is timed at: a whole-field cell once, at one image's tiles (its tile-mode twin)."""
    if cell.skip:
        return [0]
    return [per_image] if cell.inference == "field" else parse_batches(args.batches)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    models = resolve_models(args, work, engine_batch=engine_profile(args, max(parse_batches(args.batches))))
    size = size_of(args)
    pool = synth_pool(pool_folder(work, args), args.pool_images, size, args.seed)
    cells = plan_cells(models, args)
    contract = models.contract()
    per_image = tiles_per_image(size, contract.tile)
    inputs = {"images": [str(p) for p in pool], "contract": contract.to_dict()}
    rows = [run_cell(cell, batch, inputs, args, per_image)
            for cell in cells for batch in batches_of(cell, args, per_image)]
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "models": models.to_dict(), "image_size": list(size), "tiles_per_image": per_image,
            "tile": contract.tile, "pool_images": len(pool),
            "note_cpu": CPU_NOTE, "rows": rows, "cpu_speedup": cpu_speedup(rows)}


def memory(row: dict[str, Any], where: str) -> str:
    """'peak (+growth during the cell)' in MiB, or '-'."""
    peak, start = row.get(f"{where}_peak_mb"), row.get(f"{where}_start_mb")
    if peak is None:
        return "-"
    return f"{fmt(peak, 0)} (+{fmt(peak - start, 0)})" if start is not None else fmt(peak, 0)


def markdown(section: dict[str, Any]) -> str:
    rows = [r for r in section["rows"] if r["status"] == "ok"]
    others = [r for r in section["rows"] if r["status"] != "ok"]
    size, tile = section["image_size"], section["tile"]
    lines = ["## Backends: latency, throughput and memory per backend x precision x batch", "",
             f"`{section['command']}` ({section['started']})", "",
             f"Model: {section['models'].get('description')}. Images {size[0]} x {size[1]} = "
             f"{section['tiles_per_image']} tiles of {tile} px; inputs are real normalised tiles of "
             f"{section['pool_images']} synthetic fields. Latency: wall clock around one `infer` call "
             "(host batch in, host arrays out, synchronised), after warm-up.", ""]
    table = [[r["backend"], r["device"], r["precision"], r["variant"] or "-", r["batch"],
              *(fmt(r["latency_ms"][k], 1) for k in ("p50", "p95", "p99")), r["latency_ms"]["n"],
              fmt(r["patches_s"], 1), fmt(r["images_s"], 2), memory(r, "host"), memory(r, "device")] for r in rows]
    lines.append(markdown_table(["backend", "device", "precision", "variant", "batch", "p50 ms", "p95 ms",
                                 "p99 ms", "n", "patches/s", "images/s", "host peak MiB (+ in cell)",
                                 "GPU peak MiB (+ in cell)"],
                                table, right=range(4, 13)))
    if others:
        lines += ["", "Not measured here:", "",
                  markdown_table(["backend", "device", "precision", "status", "why"],
                                 [[r["backend"], r["device"], r["precision"] + (f" {r['variant']}" if r["variant"]
                                   else ""), r["status"], r["reason"]] for r in others])]
    if any(r["device"] == "cpu" and r["backend"] == "onnxruntime" for r in rows):
        lines += ["", section["note_cpu"]]
    if section.get("cpu_speedup"):
        best = section["cpu_speedup"]
        lines += ["", f"CPU speed-up (cpu_speedup): {best['best']} at batch {best['batch']} runs "
                      f"{fmt(best['images_s'], 2)} images/s against {fmt(best['baseline_images_s'], 2)} for "
                      f"{best['baseline']}: {best['speedup']:.2f}x (p50 {fmt(best['p50_ms'], 1)} ms per call)."]
    if section.get("plot"):
        lines += ["", f"![throughput and latency per backend]({section['plot']})"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return worker(Path(argv[1]))
    args = parse_args(argv)
    with work_folder(args) as work:
        section = run(args, work)
    from benchlib.plots import backends_plot

    return publish_section(args.out, "backends", section, markdown, backends_plot)


if __name__ == "__main__":
    raise SystemExit(main())
