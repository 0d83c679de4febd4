"""Learning check: train on `hep2edge synth` data and report held-out-patient figures.

    nice python benchmarks/bench_learning.py [--patients 40] [--size 256x256] [--tile 128]
        [--encoder mobilenet_v2] [--epochs 20] [--weighting fixed] [--pool-levels 3] [--augment]
        [--threads 1] [--fold 0] [--keep DIR]

Trains one fold of a patient-wise 5-fold split (about 32 training patients, 8 held out) with the
product's own `run_training`, on the CPU, and writes benchmarks/results/<machine>-learning.json and .md.
Figures are on the held-out fold's patients: at the epoch the run kept (best by its monitor, chosen on
that same fold, as the seed report does) and at the last epoch (no selection at all).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib.results import RESULTS, machine_name, write_json_md

TARGETS = {"pattern_accuracy": 0.7, "dice": 0.8}
KEYS = ("dice", "iou", "pattern_accuracy", "pattern_mca", "intensity_accuracy", "intensity_auc")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--images-per-patient", type=int, default=4)
    parser.add_argument("--size", default="256x256", help="synthetic image size HEIGHTxWIDTH")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--encoder", default="mobilenet_v2")
    parser.add_argument("--decoder-channels", default="64,32,16,16,8")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weighting", default="fixed")
    parser.add_argument("--alpha", type=float, default=0.12)
    parser.add_argument("--pool-levels", type=int, default=3)
    parser.add_argument("--out-name", default="learning", help="result file suffix: <machine>-<out-name>.json")
    parser.add_argument("--seg-loss", default="dice")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the data and run in this folder")
    return parser.parse_args()


def last_epoch_metrics(metrics_csv: Path) -> dict[str, Any]:
    """The final epoch's held-out figures from metrics.csv (no checkpoint selection)."""
    last = list(csv.DictReader(metrics_csv.open()))[-1]
    result: dict[str, Any] = {"epoch": int(last["epoch"])}
    for level in ("patch", "image", "patient"):
        result[level] = {k: float(last[f"{level}_{k}"]) for k in KEYS if last.get(f"{level}_{k}") not in (None, "")}
    return result


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    from rich.console import Console

    from hep2edge.cli.reporter import RichReporter
    from hep2edge.synth.writer import SynthConfig, parse_size, synthesize_dataset
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.run import run_training

    torch.set_num_threads(args.threads)
    data, out = work / "data", work / "run"
    started = time.perf_counter()
    synthesize_dataset(SynthConfig(out=data, patients=args.patients, images_per_patient=args.images_per_patient,
                                   size=parse_size(args.size), seed=args.seed))
    synth_s = time.perf_counter() - started
    print(f"synthesised {args.patients} patients x {args.images_per_patient} images in {synth_s:.0f}s", flush=True)
    config = TrainConfig(
        data=data, out=out, encoder=args.encoder,
        decoder_channels=tuple(int(c) for c in args.decoder_channels.split(",")),
        tile=args.tile, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weighting=args.weighting,
        alpha=args.alpha, pool_levels=args.pool_levels,
        seg_loss=args.seg_loss, augment=args.augment, folds=args.folds, fold=args.fold, seed=args.seed,
        device="cpu", progress=sys.stdout.isatty(),
    )
    train_started = time.perf_counter()
    summary = json.loads(run_training(config, RichReporter(Console(highlight=False))).read_text())
    train_s = time.perf_counter() - train_started
    fold = summary["folds"][0]
    return {
        "synth_s": round(synth_s, 1),
        "train_s": round(train_s, 1),
        "val_patients": sum(1 for f in json.loads((out / "folds.json").read_text())["folds"].values()
                            if f == args.fold),
        "best_epoch": fold["best_epoch"],
        "monitor": summary["monitor"],
        "kept": {level: {k: fold["metrics"][level].get(k) for k in KEYS} for level in ("patch", "image", "patient")},
        "last_epoch": last_epoch_metrics(out / "metrics.csv"),
        "checkpoint": fold["checkpoint"],
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Learning check on {result['machine']}",
        "",
        f"`{result['command']}` ({result['date']}, {result['cpus']} CPUs, torch threads {result['threads']}, "
        f"{result['wall_s']:.0f} s wall: synth {result['synth_s']:.0f} s, training {result['train_s']:.0f} s)",
        "",
        f"Synthetic data: {result['dataset']}. Model: {result['model']}. Fold {result['fold']} of a patient-wise "
        f"{result['folds']}-fold split: {result['val_patients']} held-out patients never seen in training.",
        "",
        f"| level | metric | kept epoch ({result['best_epoch']}, by {result['monitor']}) | last epoch "
        f"({result['last_epoch']['epoch']}) | target |",
        "|---|---|---:|---:|---:|",
    ]
    for level in ("patch", "image", "patient"):
        for key in KEYS:
            kept, last = result["kept"][level].get(key), result["last_epoch"][level].get(key)
            target = f">= {TARGETS[key]}" if key in TARGETS and level == "patch" else ""
            lines.append(f"| {level} | {key} | {_fmt(kept)} | {_fmt(last)} | {target} |")
    lines += ["", f"Pass (patch level, kept epoch): {result['pass']}", ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        raw = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            raw = run(args, Path(tmp))
    machine = machine_name()
    patch = raw["kept"]["patch"]
    result = {
        "machine": machine,
        "command": "python benchmarks/bench_learning.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "wall_s": round(time.perf_counter() - started, 1),
        "dataset": f"hep2edge synth, {args.patients} patients x {args.images_per_patient} images of {args.size}, "
                   f"seed {args.seed}, {args.tile} px tiles",
        "model": f"{args.encoder} U-Net (decoder {args.decoder_channels}, heads on {args.pool_levels} pooled "
                 "encoder stage(s)), encoder weights none, "
                 f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, {args.weighting} weighting"
                 f"{f' (alpha {args.alpha})' if args.weighting == 'gradnorm' else ''}, "
                 f"{args.seg_loss} loss, augment {args.augment}",
        "fold": args.fold,
        "folds": args.folds,
        "val_patients": raw["val_patients"],
        "pattern_accuracy": patch["pattern_accuracy"],
        "dice": patch["dice"],
        "targets": TARGETS,
        "pass": all(patch[k] is not None and patch[k] >= v for k, v in TARGETS.items()),
        **{k: raw[k] for k in ("synth_s", "train_s", "best_epoch", "monitor", "kept", "last_epoch")},
    }
    write_json_md(RESULTS / f"{machine}-{args.out_name}.json", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
