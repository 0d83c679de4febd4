"""Run every benchmark into one results file per machine and day, then check the targets.

    python benchmarks/run_all.py [--quick] [--out DIR] [--only backends,pipeline,host,preprocess,accuracy,soak]
        [--work DIR] [--backends-args "..."] [--pipeline-args "..."] [--host-args "..."]
        [--preprocess-args "..."] [--accuracy-args "..."] [--soak-args "..."]
    python benchmarks/run_all.py --readme [--out DIR]     # print benchmarks/README.md's Results table

Each script runs in its own process (clean memory figures, as a user would run it) with the same --out and
a shared --work folder, so the model is exported once and reused. `hep2edge bench` runs this file.
`soak` (a tiny model over 10,000 small images, 300 with --quick) writes its own `<machine>-soak-<date>` files.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib.results import RESULTS, machine_name, result_path, update_section
from benchlib.summary import readme_markdown, targets, targets_markdown

HERE = Path(__file__).resolve().parent
SCRIPTS = {"backends": "bench_backends.py", "pipeline": "bench_pipeline.py", "host": "bench_host.py",
           "preprocess": "bench_preprocess.py", "accuracy": "bench_accuracy.py", "soak": "bench_soak.py",
           "cells": "bench_cells.py"}
OWN_FILES = {"soak", "cells"}  # scripts that write `<machine>-<name>-<date>` files, not a section of the day's file


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a few minutes on a 2-core CPU")
    parser.add_argument("--only", default=",".join(SCRIPTS), help="which benchmarks, comma-separated")
    parser.add_argument("--work", type=Path, default=None, help="shared data/model folder, kept (default: temporary)")
    for name in SCRIPTS:
        parser.add_argument(f"--{name}-args", default="", help=f"extra options for {SCRIPTS[name]}")
    parser.add_argument("--readme", action="store_true", help="only print benchmarks/README.md's Results table")
    return parser.parse_args(argv)


def command_for(name: str, args: argparse.Namespace, work: Path) -> list[str]:
    command = [sys.executable, str(HERE / SCRIPTS[name]), "--out", str(args.out)]
    if name != "preprocess":
        command += ["--work", str(work / ("accuracy" if name == "accuracy" else "shared"))]
    if args.quick:
        command.append("--quick")
    return command + shlex.split(getattr(args, f"{name}_args"))


def run_scripts(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    """Each selected script in turn; a failing one is reported and the others still run."""
    ran = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in SCRIPTS:
            raise SystemExit(f"unknown benchmark '{name}'; valid: {', '.join(SCRIPTS)}")
        command = command_for(name, args, work)
        print(f"\n=== {name}: {shlex.join(command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, cwd=HERE.parent)
        ran.append({"name": name, "command": shlex.join(command), "exit": code,
                    "seconds": round(time.monotonic() - started, 1)})
        print(f"=== {name}: exit {code} after {ran[-1]['seconds']} s", flush=True)
    return ran


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme:
        print(readme_markdown(args.out))
        return 0
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="hep2edge-bench-") as tmp:
            ran = run_scripts(args, Path(tmp))
    else:
        ran = run_scripts(args, args.work)
    path = result_path(args.out, machine_name(with_gpu=True))
    if not path.is_file():
        if ran and all(r["name"] in OWN_FILES for r in ran):
            return 0 if all(r["exit"] == 0 for r in ran) else 1
        print("no results were written", file=sys.stderr)
        return 1
    found = targets(json.loads(path.read_text()))
    update_section(args.out, "targets", {"targets": found, "scripts": ran}, targets_markdown(found))
    print("\n" + targets_markdown(found))
    print(f"results: {path} and {path.with_suffix('.md')}")
    return 0 if all(r["exit"] == 0 for r in ran) else 1


if __name__ == "__main__":
    raise SystemExit(main())
