"""The CUDA preprocessing kernel against the numpy reference and a device memcpy of the same bytes.

    python benchmarks/bench_preprocess.py [--quick] [--out DIR] [--sizes 1040x1388,2080x2776] [--tile 384]
        [--dtypes uint8,uint16] [--outputs fp32,fp16] [--normalizations fixed,minmax] [--repeats 200]

For each frame size, pixel type, output type and normalisation: the numpy reference (`frame_to_batch`,
wall clock) and the pycuda kernel (`CudaPreprocessor.cut`: tiles cut, converted and normalised from the
uploaded frame into a device buffer; GPU time from CUDA events over back-to-back launches), and a
device-to-device memcpy of the kernel's output bytes timed the same way. Bandwidth counts the bytes a
pass must move: frame read + tiles written for preprocessing, read + write for the copy; the fraction
is kernel GB/s / copy GB/s. The kernel's output is checked against numpy. Writes the `preprocess` section.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import devices
from benchlib.cli import parse, say
from benchlib.results import RESULTS, command_line, publish_section
from benchlib.stats import summarize
from benchlib.tables import fmt, markdown_table
from benchlib.timing import Budget, time_calls

QUICK = {"sizes": "256x384", "tile": 128, "repeats": 20}
OUT_TYPES = {"fp32": np.float32, "fp16": np.float16}
GB = 1e9


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="small frames, few repeats")
    parser.add_argument("--sizes", default="1040x1388,2080x2776", help="frame sizes HEIGHTxWIDTH")
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--dtypes", default="uint8,uint16")
    parser.add_argument("--outputs", default="fp32,fp16", help="dtype written into the engine input buffer")
    parser.add_argument("--normalizations", default="fixed,minmax")
    parser.add_argument("--repeats", type=int, default=200, help="back-to-back GPU launches per timing")
    parser.add_argument("--seed", type=int, default=0)
    return parse(parser, argv, QUICK)


def frame(size: tuple[int, int], dtype: str, seed: int) -> np.ndarray:
    """A synthetic HEp-2 field of `size` as uint8 or uint16 (never zeros)."""
    from hep2edge.synth.writer import SynthConfig, patient_labels, render_image

    config = SynthConfig(out=Path("."), patients=7, images_per_patient=1, size=size, seed=seed)
    image, _ = render_image(config, 1, 1, patient_labels(7, seed)[0])
    return image.astype(np.uint16) * 257 if dtype == "uint16" else image.astype(np.uint8)


def contract_for(tile: int, normalization: str) -> Any:
    from hep2edge.contract import ModelContract
    from hep2edge.normalization import NormalizationSpec

    return ModelContract(tile=tile, normalization=NormalizationSpec(normalization))


def numpy_row(gray: np.ndarray, contract: Any, quick: bool) -> dict[str, Any]:
    from hep2edge.runtime.preprocess import frame_to_batch

    budget = Budget.named("quick" if quick else "cpu", min_seconds=0.5 if quick else 3.0, max_seconds=10.0)
    samples = time_calls(lambda _: frame_to_batch(gray, contract), budget)
    return {"latency_ms": summarize(samples), "ms": float(np.median(samples))}


def cuda_rows(gray: np.ndarray, contract: Any, outputs: list[str], repeats: int) -> dict[str, dict[str, Any]]:
    """Kernel and memcpy GPU times per output dtype, and the kernel's largest difference from numpy."""
    from benchlib.cuda_timing import EventTimer

    from hep2edge.runtime.cuda_preprocess import CudaPreprocessor
    from hep2edge.runtime.preprocess import frame_grid, frame_to_batch

    pre = CudaPreprocessor(contract)
    cuda, grid = pre.cuda, frame_grid(gray, contract)
    timer = EventTimer(pre.stream)
    reference = frame_to_batch(gray, contract)[0]
    rows = {}
    try:
        pre.upload(gray)
        for name in outputs:
            dtype = np.dtype(OUT_TYPES[name])
            nbytes = reference.size * dtype.itemsize
            dst, copy = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)

            def cut(dst: Any = dst, dtype: np.dtype = dtype) -> None:
                pre.cut(grid, int(dst), dtype)

            def memcpy(dst: Any = dst, copy: Any = copy, nbytes: int = nbytes) -> None:
                cuda.memcpy_dtod_async(copy, dst, nbytes, pre.stream)

            kernel_ms = timer.per_call_ms(cut, repeats)
            copy_ms = timer.per_call_ms(memcpy, repeats)
            host = np.empty(reference.shape, dtype)
            cuda.memcpy_dtoh(host, dst)
            diff = float(np.abs(host.astype(np.float32) - reference).max())
            rows[name] = {"kernel_ms": kernel_ms, "copy_ms": copy_ms, "out_bytes": nbytes, "max_abs_diff": diff}
            dst.free()
            copy.free()
    finally:
        pre.close()
    return rows


def case_rows(gray: np.ndarray, contract: Any, args: argparse.Namespace, outputs: list[str],
              gpu_ok: bool) -> list[dict[str, Any]]:
    """One row per output dtype for this frame, dtype and normalisation."""
    from hep2edge.runtime.preprocess import frame_grid

    tiles = len(frame_grid(gray, contract))
    base = {"size": list(gray.shape), "dtype": str(gray.dtype), "normalization": contract.normalization.mode,
            "tiles": tiles}
    numpy_result = numpy_row(gray, contract, args.quick)
    gpu = cuda_rows(gray, contract, outputs, args.repeats) if gpu_ok else {}
    rows = []
    for name in outputs:
        out_bytes = tiles * contract.channels * contract.tile ** 2 * np.dtype(OUT_TYPES[name]).itemsize
        moved = gray.nbytes + out_bytes
        numpy_moved = gray.nbytes + tiles * contract.channels * contract.tile ** 2 * 4  # numpy always writes fp32
        row = {**base, "output": name, "frame_bytes": gray.nbytes, "out_bytes": out_bytes,
               "numpy_ms": numpy_result["ms"], "numpy_latency_ms": numpy_result["latency_ms"],
               "numpy_gb_s": numpy_moved / numpy_result["ms"] / 1e6}
        if name in gpu:
            g = gpu[name]
            row.update(kernel_ms=g["kernel_ms"], kernel_gb_s=moved / g["kernel_ms"] / 1e6, copy_ms=g["copy_ms"],
                       copy_gb_s=2 * out_bytes / g["copy_ms"] / 1e6, max_abs_diff=g["max_abs_diff"])
            row["fraction_of_copy"] = row["kernel_gb_s"] / row["copy_gb_s"]
            row["speedup_vs_numpy"] = numpy_result["ms"] / g["kernel_ms"]
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hep2edge.synth.writer import parse_size

    gpu = devices.cuda_pycuda()
    if not gpu.ok:
        say(f"CUDA kernel not measured: {gpu.reason}; timing the numpy reference only")
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    rows = []
    for size_text in args.sizes.split(","):
        size = parse_size(size_text)
        for dtype in args.dtypes.split(","):
            gray = frame(size, dtype.strip(), args.seed)
            for normalization in args.normalizations.split(","):
                say(f"{size[0]}x{size[1]} {dtype} {normalization}")
                rows += case_rows(gray, contract_for(args.tile, normalization.strip()), args, outputs, gpu.ok)
    fractions = [r["fraction_of_copy"] for r in rows if "fraction_of_copy" in r]
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tile": args.tile,
            "repeats": args.repeats, "cuda": {"ok": gpu.ok, "reason": gpu.reason}, "rows": rows,
            "fraction_of_copy_min": min(fractions) if fractions else None,
            "fraction_of_copy_image": next((r["fraction_of_copy"] for r in rows if "fraction_of_copy" in r), None)}


def markdown(section: dict[str, Any]) -> str:
    lines = ["## Preprocessing: CUDA kernel vs numpy vs device copy", "",
             f"`{section['command']}` ({section['started']})", "",
             f"Tiles of {section['tile']} px cut from a frame, converted and normalised. Bytes moved = frame + tiles "
             "written (kernel, numpy) or 2 x tiles (device-to-device copy of the same output bytes). GPU times from "
             f"CUDA events over {section['repeats']} back-to-back launches; numpy (which always writes fp32, so its "
             "columns repeat for fp16): wall-clock median.", ""]
    if not section["cuda"]["ok"]:
        lines += [f"CUDA kernel not measured here: {section['cuda']['reason']}.", ""]
    rows = [[f"{r['size'][0]}x{r['size'][1]}", r["dtype"], r["normalization"], r["output"], r["tiles"],
             fmt(r["numpy_ms"], 2), fmt(r["numpy_gb_s"], 2), fmt(r.get("kernel_ms", float("nan")) * 1000, 1),
             fmt(r.get("kernel_gb_s"), 0), fmt(r.get("copy_gb_s"), 0), fmt(r.get("fraction_of_copy"), 2),
             fmt(r.get("max_abs_diff"), 6)] for r in section["rows"]]
    lines.append(markdown_table(["frame", "pixels", "normalisation", "output", "tiles", "numpy ms", "numpy GB/s",
                                 "kernel µs", "kernel GB/s", "copy GB/s", "fraction of copy", "max diff"],
                                rows, right=range(4, 12)))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    section = run(args)
    return publish_section(args.out, "preprocess", section, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
