"""Task metrics per precision (torch, ONNX fp32/fp16/int8, TensorRT engines) on held-out synthetic patients.

    python benchmarks/bench_accuracy.py [--quick] [--out DIR] [--checkpoint PATH] [--patients 28]
        [--epochs 12] [--encoder mobilenet_v2] [--tile 128] [--size 256x256] [--test-patients 14]

Trains a model with the product's `run_training` on `hep2edge synth` data (or takes --checkpoint), exports it
with `run_export` (fp32, fp16 AutoCast, int8 Q/DQ calibrated on training tiles), then scores every runnable
backend x precision on a fresh synthetic set made with another seed (patients never seen in training or
model selection): Dice, IoU, pattern accuracy and mean class accuracy, intensity accuracy and AUC at patch,
image and patient level, and each one's change against the torch fp32 model. The defaults train a small
model that learns in minutes on a CPU; on a GPU pass the real architecture (--encoder efficientnet-b4
--decoder-channels 256,128,64,32,16 --tile 384 --size 1040x1388). Writes the `accuracy` section.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import devices
from benchlib.accuracy import (
    LEVELS,
    backend_outputs,
    changes,
    field_backend_outputs,
    level_metrics,
    output_differences,
)
from benchlib.choice import Choice
from benchlib.cli import parse, say, work_folder
from benchlib.models import ModelSet, export_set
from benchlib.results import RESULTS, command_line, publish_section
from benchlib.tables import fmt, markdown_table

from hep2edge.export.field_check import POOLINGS, agreement

QUICK = {"patients": 7, "images_per_patient": 2, "size": "128x128", "tile": 64, "epochs": 1, "test_patients": 7,
         "test_images_per_patient": 1, "encoder": "resnet18", "decoder_channels": "32,16,16,8,8", "calib_images": 8,
         "pool_levels": 1}
FIELD_BACKENDS = ("onnxruntime", "openvino")  # whole-field rows: the CPU paths the field mode is for
SHOWN = ("dice", "pattern_accuracy", "pattern_mca", "intensity_accuracy", "intensity_auc")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a tiny model trained for one epoch (a smoke run)")
    parser.add_argument("--work", type=Path, default=None, help="keep data, run and export here")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained checkpoint (skips training)")
    parser.add_argument("--patients", type=int, default=28)
    parser.add_argument("--images-per-patient", type=int, default=4)
    parser.add_argument("--size", default="256x256", help="synthetic image size HEIGHTxWIDTH")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--encoder", default="mobilenet_v2")
    parser.add_argument("--decoder-channels", default="64,32,16,16,8")
    parser.add_argument("--pool-levels", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--test-patients", type=int, default=14, help="fresh held-out patients (2 per pattern)")
    parser.add_argument("--test-images-per-patient", type=int, default=4)
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="tiles per inference call")
    parser.add_argument("--seed", type=int, default=0)
    return parse(parser, argv, QUICK)


TRAIN_KEYS = ("patients", "images_per_patient", "size", "tile", "encoder", "decoder_channels", "pool_levels",
              "epochs", "batch_size", "lr", "seed")


def train(args: argparse.Namespace, work: Path) -> Path:
    """Synthesise the training set and train fold 0 of 5; the kept (best) checkpoint. A finished run with the
    same settings in the work folder is reused; an unfinished one is started again."""
    from rich.console import Console

    from hep2edge.cli.reporter import RichReporter
    from hep2edge.synth.writer import SynthConfig, parse_size, synthesize_dataset
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.run import run_training

    key = hashlib.sha256(json.dumps([getattr(args, k) for k in TRAIN_KEYS]).encode()).hexdigest()[:12]
    data, out = work / f"train-data-{key}", work / f"train-{key}"
    if (out / "summary.json").is_file():
        say(f"reusing the finished training run {out}")
        return out / json.loads((out / "summary.json").read_text())["folds"][0]["checkpoint"]
    shutil.rmtree(out, ignore_errors=True)
    if not (data / "labels.csv").is_file():
        synthesize_dataset(SynthConfig(out=data, patients=args.patients, images_per_patient=args.images_per_patient,
                                       size=parse_size(args.size), seed=args.seed))
    say(f"training {args.encoder} for {args.epochs} epoch(s) on {args.patients} patients")
    config = TrainConfig(data=data, out=out, encoder=args.encoder,
                         decoder_channels=tuple(int(c) for c in args.decoder_channels.split(",")),
                         pool_levels=args.pool_levels, tile=args.tile, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, augment=True, folds=5, fold=0, seed=args.seed,
                         progress=False)
    summary = run_training(config, RichReporter(Console(highlight=False)))
    return out / json.loads(summary.read_text())["folds"][0]["checkpoint"]


def test_set(args: argparse.Namespace, work: Path) -> Path:
    from hep2edge.synth.writer import SynthConfig, parse_size, synthesize_dataset

    data = work / f"test-data-{args.test_patients}x{args.test_images_per_patient}-{args.size}-{args.seed + 1000}"
    if not (data / "labels.csv").is_file():
        synthesize_dataset(SynthConfig(out=data, patients=args.test_patients,
                                       images_per_patient=args.test_images_per_patient, size=parse_size(args.size),
                                       seed=args.seed + 1000))
    return data


def choices(models: ModelSet) -> list[tuple[Choice | None, str]]:
    """(choice, why-not) per row: torch fp32 first (the reference), then ONNX and engines."""
    assert models.checkpoint is not None
    gpu = devices.torch_cuda().ok
    device = "cuda" if gpu else "cpu"
    rows: list[tuple[Choice | None, str]] = [(Choice("torch", models.checkpoint, "fp32", device), "")]
    if gpu:
        rows.append((Choice("torch", models.checkpoint, "fp16", "cuda", channels_last=True), ""))
    ort_device = "cuda" if devices.onnxruntime_cuda().ok else "cpu"
    for precision in ("fp32", "fp16", "int8"):
        path = models.onnx.get(precision)
        rows.append((Choice("onnxruntime", path, precision, ort_device), "") if path else
                    (None, f"onnxruntime {precision}: {models.missing.get(precision, 'not exported')}"))
    if devices.openvino().ok:  # the CPU path without an NVIDIA GPU: the same files under OpenVINO
        rows += [(Choice("openvino", models.onnx[p], p, "cpu", hint="f32"), "") for p in ("fp32", "int8")
                 if p in models.onnx]
    for precision, engine in models.engines.items():
        rows.append((Choice("tensorrt", engine, precision, "cuda"), ""))
    if not models.engines:
        rows.append((None, f"tensorrt: {models.missing.get('engines', devices.tensorrt().reason)}"))
    return rows


def evaluate(models: ModelSet, tiles: Any, contract: Any, batch: int) -> tuple[list[dict[str, Any]], list[str]]:
    threshold = contract.mask_threshold
    rows, skipped = [], []
    reference: dict[str, Any] | None = None
    for choice, why in choices(models):
        if choice is None:
            skipped.append(why)
            continue
        say(f"scoring {choice.label()} on {len(tiles)} tiles")
        outputs, per_tile, described = backend_outputs(choice, tiles.images, batch)
        metrics = level_metrics(outputs, tiles, threshold)
        if reference is None:
            reference = {"outputs": outputs, "metrics": metrics}
        rows.append({"label": choice.label(), "describe": described, "ms_per_tile": per_tile, "metrics": metrics,
                     "change": changes(metrics, reference["metrics"]),
                     "max_abs_diff": output_differences(reference["outputs"], outputs)})
        if choice.backend in FIELD_BACKENDS:
            rows += field_rows(choice, tiles, contract, outputs, reference["metrics"])
    return rows, skipped


def field_rows(choice: Choice, tiles: Any, contract: Any, tile_outputs: dict[str, Any],
               reference: dict[str, Any]) -> list[dict[str, Any]]:
    """The same backend in whole-field mode, pooled per tile region and over the whole field, scored against the
    truth and compared with its own tile-mode outputs."""
    rows = []
    for pooling in POOLINGS:
        say(f"scoring {choice.label()} whole field ({pooling} pooling)")
        outputs, per_tile, described = field_backend_outputs(choice, tiles, contract, pooling)
        metrics = level_metrics(outputs, tiles, contract.mask_threshold)
        rows.append({"label": f"{choice.label()} whole field, {pooling} pooling", "describe": described,
                     "ms_per_tile": per_tile, "metrics": metrics, "change": changes(metrics, reference),
                     "max_abs_diff": output_differences(tile_outputs, outputs), "inference": "field",
                     "pooling": pooling,
                     "vs_tiles": agreement(outputs, tile_outputs, tiles.valid, tiles.image_ids,
                                           contract.mask_threshold)})
    return rows


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from hep2edge.export.tiles import DataSelection, verification_tiles

    checkpoint = args.checkpoint or train(args, work)
    test = test_set(args, work)
    precisions = tuple(p.strip() for p in args.precisions.split(","))
    say(f"exporting {checkpoint} ({', '.join(precisions)})")
    models = export_set(checkpoint, work / "export", test, precisions, say, engine_batch=(1, args.batch, args.batch),
                        calib_images=args.calib_images, strict=True, val_images=4)
    contract = models.contract()
    images = args.test_patients * args.test_images_per_patient
    tiles = verification_tiles(DataSelection(test, None, "fresh test set"), contract, images, args.seed)
    rows, skipped = evaluate(models, tiles, contract, args.batch)
    return {"command": command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "checkpoint": str(checkpoint),
            "trained_here": args.checkpoint is None, "model": f"{contract.encoder} U-Net, {contract.tile} px tiles",
            "training": None if args.checkpoint else {k: getattr(args, k) for k in (
                "patients", "images_per_patient", "size", "epochs", "batch_size", "lr", "pool_levels", "seed")},
            "test_set": {"patients": args.test_patients, "images": images, "tiles": len(tiles), "size": args.size,
                         "seed": args.seed + 1000}, "export": models.export, "rows": rows, "skipped": skipped}


def markdown(section: dict[str, Any]) -> str:
    test = section["test_set"]
    origin = section["checkpoint"]
    if section["trained_here"]:
        t = section["training"]
        origin = (f"trained here on {t['patients']} synthetic patients x {t['images_per_patient']} images of "
                  f"{t['size']}, fold 0 of 5, {t['epochs']} epoch(s), batch {t['batch_size']}, lr {t['lr']}")
    lines = ["## Accuracy per precision on held-out synthetic patients", "",
             f"`{section['command']}` ({section['started']})", "",
             f"Model: {section['model']} ({origin}). "
             f"Test set: {test['patients']} fresh synthetic patients ({test['images']} images of {test['size']}, "
             f"{test['tiles']} tiles, seed {test['seed']}), never seen in training or model selection. Changes "
             "are against the torch fp32 row. Synthetic figures: not a claim about real I3A data.", ""]
    for level in LEVELS:
        rows = [[r["label"], *(f"{fmt(r['metrics'][level][k], 3)} ({r['change'][level][k]:+.3f})" for k in SHOWN),
                 *([fmt(max(r["max_abs_diff"].values()), 4), fmt(r["ms_per_tile"], 1)] if level == "patch" else [])]
                for r in section["rows"]]
        extra = ["max abs diff", "ms/tile"] if level == "patch" else []
        lines += [f"**{level} level**", "", markdown_table(["backend", *SHOWN, *extra], rows,
                                                           right=range(1, len(SHOWN) + 1 + len(extra))), ""]
    field = [r for r in section["rows"] if r.get("inference") == "field"]
    if field:
        lines += ["Whole-field inference against tile mode on the same backend (mask Dice over every in-image pixel; "
                  "share of images with the same pattern):", "",
                  markdown_table(["backend", "mask Dice vs tiles", "pattern agreement"],
                                 [[r["label"], fmt(r["vs_tiles"]["mask_dice"], 4),
                                   fmt(r["vs_tiles"]["pattern_agreement"], 3)] for r in field], right=(1, 2)), ""]
    if section["export"]:
        verdict = "passed" if section["export"].get("passed") else "failed: " + "; ".join(section["export"]["failures"])
        lines.append(f"Export limits (Dice drop <= 0.01, accuracy drop <= 0.02 on its own check): {verdict}.")
    if section["skipped"]:
        lines += ["", "Not measured here: " + "; ".join(section["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with work_folder(args) as work:
        section = run(args, work)
    return publish_section(args.out, "accuracy", section, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
