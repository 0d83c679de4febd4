"""Time the synthetic generator per 1040 x 1388 field (render only, and render + write TIFFs).

    python benchmarks/bench_synth.py [--images 14] [--size 1040x1388] [--seed 0]

Writes benchmarks/results/<machine>-synth.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib.results import RESULTS, machine_name, write_json_md

from hep2edge.imageio import write_image_tiff
from hep2edge.labels import PATTERNS
from hep2edge.synth.writer import SynthConfig, parse_size, patient_labels, render_image


def run(images: int, size: tuple[int, int], seed: int) -> dict[str, object]:
    patients = max(7, images)
    config = SynthConfig(out=Path("."), patients=patients, images_per_patient=1, size=size, seed=seed)
    labels = patient_labels(patients, seed)
    render_image(config, 1, 1, labels[0])  # warm-up (imports, allocator)
    render_s: list[float] = []
    write_s: list[float] = []
    per_pattern: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(images):
            start = time.perf_counter()
            image, mask = render_image(config, i + 1, 1, labels[i])
            mid = time.perf_counter()
            write_image_tiff(Path(tmp) / "a.tif", image)
            write_image_tiff(Path(tmp) / "a_Mask.tif", mask.astype(np.uint8) * 255)
            end = time.perf_counter()
            render_s.append(mid - start)
            write_s.append(end - mid)
            per_pattern.setdefault(PATTERNS[labels[i][0]], []).append(mid - start)
    render = np.array(render_s)
    total = render + np.array(write_s)
    return {
        "images": images, "size": list(size), "seed": seed,
        "render_ms": {"mean": 1e3 * render.mean(), "median": 1e3 * np.median(render), "min": 1e3 * render.min(),
                      "max": 1e3 * render.max()},
        "render_write_ms": {"mean": 1e3 * total.mean(), "median": 1e3 * np.median(total), "max": 1e3 * total.max()},
        "render_ms_per_pattern": {k: 1e3 * float(np.mean(v)) for k, v in per_pattern.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=14)
    parser.add_argument("--size", default="1040x1388")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.images, parse_size(args.size), args.seed)
    machine = machine_name()
    result.update({
        "machine": machine, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    r, w = result["render_ms"], result["render_write_ms"]
    lines = [
        f"# Synthetic field generation on {machine}", "",
        f"`{result['command']}` ({result['date']}, {result['cpu_count']} CPUs, Python {result['python']})", "",
        "| per image | mean ms | median ms | max ms |", "|---|---:|---:|---:|",
        f"| render {args.size} | {r['mean']:.0f} | {r['median']:.0f} | {r['max']:.0f} |",  # type: ignore[index]
        f"| render + write 2 TIFFs | {w['mean']:.0f} | {w['median']:.0f} | {w['max']:.0f} |",  # type: ignore[index]
        "", "| pattern | render ms |", "|---|---:|",
        *(f"| {k} | {v:.0f} |" for k, v in result["render_ms_per_pattern"].items()),  # type: ignore[attr-defined]
    ]
    write_json_md(RESULTS / f"{machine}-synth.json", result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
