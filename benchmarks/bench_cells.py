"""Per-cell accuracy: AJI, PQ, F1@0.5, count error and the pattern map's mIoU on held-out synthetic patients.

    python benchmarks/bench_cells.py [--quick] [--out DIR] [--work DIR] [--patients 40] [--images-per-patient 4]
        [--size 256x256] [--tile 128] [--encoder mobilenet_v2] [--epochs 16] [--test-patients 14]
        [--test-images-per-patient 2] [--test-size 1040x1388] [--no-field] [--models heads,plain] [--threads N]
        [--label NAME] [--distance-loss l1|mse] [--task-weights W,W,W,W,W]

Trains the demo-size model twice with the product's `run_training` on `hep2edge synth` data (the same data,
fold 0 of 5): (a) with the distance and pattern-map heads (`instances=True, pattern_map=True`), (b) the same
without them. A finished run with the same settings in --work is reused. Each is exported to fp32 ONNX with
`run_export` and run on a fresh synthetic test set (another seed, full-size fields by default) as the runtime
runs it: ONNX Runtime on the CPU, tiles cut by `frame_to_batch`, the mask stitched by `full_mask`, the dense maps
by `full_dense`, cells found by `analyse_cells` with the contract's instance params ("distance" for (a),
"components" = connected components of the mask for (b), and for (a)'s own mask as a control). (a) is also
scored in whole-field mode (`--inference field`) unless --no-field.

Truth: the synth `{stem}_Labels.tif` ids; scores per field by `instance_scores` (AJI, PQ = DQ x SQ, F1 /
precision / recall at IoU 0.5, centroid F1 within 12 px, count error), averaged over fields. mIoU: the pattern
map's per-pixel argmax against 0 = background, 1 + the image's pattern on cell pixels, pooled over every pixel
of the test set (`mean_iou`, background a class); without a pattern map, the mask x the image's pattern verdict.
Post-processing is timed per field as the runtime's writer does it (stitch = full_mask; cells = full_dense +
analyse_cells), p50. Writes its own `<machine>-instances-accuracy[-<label>]-<date>.json` / `.md` into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.cli import parse, say, work_folder
from benchlib.models import export_set
from benchlib.results import RESULTS, command_line, environment, machine_name, result_path, today, write_json_md
from benchlib.stats import summarize
from benchlib.tables import fmt, markdown_table, verdict

from hep2edge.cell_kernels import cell_kernels
from hep2edge.demo.config import DemoConfig
from hep2edge.train.settings import TrainSettings

QUICK = {"patients": 5, "images_per_patient": 2, "size": "128x128", "tile": 64, "epochs": 1, "test_patients": 2,
         "test_images_per_patient": 1, "test_size": "256x384", "encoder": "resnet18",
         "decoder_channels": "32,16,16,8,8", "pool_levels": 1}
TARGETS = {"aji": (0.70, True), "pq": (0.60, True), "f1": (0.85, True), "count_relative_error": (0.10, False)}
SHOWN = ("aji", "pq", "dq", "sq", "f1", "precision", "recall", "centroid_f1", "count_relative_error", "miou")
TRAIN_KEYS = ("patients", "images_per_patient", "size", "tile", "encoder", "decoder_channels", "pool_levels",
              "epochs", "batch_size", "lr", "seed")
DATA_KEYS = ("patients", "images_per_patient", "size", "seed")
MODELS = {"heads": {"instances": True, "pattern_map": True}, "plain": {"instances": False, "pattern_map": False}}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--quick", action="store_true", help="a tiny model trained for one epoch (a smoke run)")
    parser.add_argument("--work", type=Path, default=None, help="keep data, runs and exports here (reused)")
    demo = DemoConfig()  # the demo-size model by default
    parser.add_argument("--patients", type=int, default=demo.patients, help="training patients (the demo's)")
    parser.add_argument("--images-per-patient", type=int, default=demo.images_per_patient)
    parser.add_argument("--size", default="x".join(map(str, demo.size)), help="training image size HEIGHTxWIDTH")
    parser.add_argument("--tile", type=int, default=demo.tile)
    parser.add_argument("--encoder", default=demo.encoder)
    parser.add_argument("--decoder-channels", default=",".join(map(str, demo.decoder_channels)))
    parser.add_argument("--pool-levels", type=int, default=demo.pool_levels)
    parser.add_argument("--epochs", type=int, default=demo.epochs)
    parser.add_argument("--batch-size", type=int, default=demo.batch_size)
    parser.add_argument("--lr", type=float, default=demo.lr)
    parser.add_argument("--test-patients", type=int, default=14, help="fresh held-out patients (2 per pattern)")
    parser.add_argument("--test-images-per-patient", type=int, default=2)
    parser.add_argument("--test-size", default="1040x1388", help="test field size HEIGHTxWIDTH (full size)")
    parser.add_argument("--batch", type=int, default=16, help="tiles per inference call")
    parser.add_argument("--no-field", action="store_true", help="skip the whole-field rows")
    parser.add_argument("--tile-overlap", type=int, default=32,
                        help="px; adds a tiles row with neighbours overlapping this much (0: no such row)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="which models to train and score: heads (distance + pattern map), plain (neither)")
    parser.add_argument("--label", default="",
                        help="added to the file name (<machine>-instances-accuracy-<label>-<date>): another setting")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and ONNX Runtime threads (0: their defaults); 1 is far faster on a busy CPU")
    parser.add_argument("--distance-loss", default=TrainSettings.distance_loss, help="the distance head's loss")
    parser.add_argument("--task-weights", default="",
                        help="fixed task weights mask,pattern,intensity,distance,pattern_map (default: all 1)")
    parser.add_argument("--seed", type=int, default=0)
    return parse(parser, argv, QUICK)


def _key(values: list[Any]) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:12]


def training_data(args: argparse.Namespace, work: Path) -> Path:
    from hep2edge.synth.writer import SynthConfig, parse_size, synthesize_dataset

    data = work / f"cells-train-data-{_key([getattr(args, k) for k in DATA_KEYS])}"
    if not (data / "labels.csv").is_file():
        say(f"synthesising {args.patients} x {args.images_per_patient} training images of {args.size}")
        synthesize_dataset(SynthConfig(out=data, patients=args.patients, images_per_patient=args.images_per_patient,
                                       size=parse_size(args.size), seed=args.seed))
    return data


def train(args: argparse.Namespace, work: Path, data: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """Fold 0 of 5 with or without the heads; (kept checkpoint, facts). A finished run is reused, a killed one
    resumed from its last epoch (`--resume`: it ends where an uninterrupted run would)."""
    import torch
    from rich.console import Console

    from hep2edge.cli.reporter import RichReporter
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.resume import LAST
    from hep2edge.train.run import run_training

    heads: dict[str, Any] = dict(MODELS[name])
    if heads["instances"]:
        heads["distance_loss"] = args.distance_loss
        if args.task_weights:
            heads["task_weights"] = tuple(float(w) for w in args.task_weights.split(","))
    # l1 and unset weights stay out of the run key, so the runs made before these options are reused
    keyed = {k: v for k, v in heads.items() if not (k == "distance_loss" and v == "l1")}
    out = work / f"cells-train-{name}-{_key([*(getattr(args, k) for k in TRAIN_KEYS), keyed])}"
    facts_file = out / "bench_cells.json"
    if (out / "summary.json").is_file() and facts_file.is_file():
        say(f"reusing the finished training run {out}")
    else:
        resume = (out / "fold_0" / LAST).is_file() and not (out / "summary.json").is_file()
        if not resume:
            shutil.rmtree(out, ignore_errors=True)
        say(f"{'resuming' if resume else 'training'} {args.encoder} ({name}: {heads}) for {args.epochs} epoch(s) "
            f"on {args.patients} patients")
        config = TrainConfig(data=data, out=out, encoder=args.encoder,
                             decoder_channels=tuple(int(c) for c in args.decoder_channels.split(",")),
                             pool_levels=args.pool_levels, tile=args.tile, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, augment=True, folds=5, fold=0, seed=args.seed,
                             progress=False, resume=resume, **heads)
        started = time.monotonic()
        run_training(config, RichReporter(Console(highlight=False)))
        facts_file.write_text(json.dumps({"train_seconds": _epoch_seconds(out) or time.monotonic() - started,
                                          "resumed": resume, "torch_threads": torch.get_num_threads(),
                                          "load_average": os.getloadavg()[0]}) + "\n")
        say(f"trained {name} in {time.monotonic() - started:.0f} s")
    summary = json.loads((out / "summary.json").read_text())
    fold = summary["folds"][0]
    validation = {k: v for k, v in fold["metrics"].get("patch", {}).items()
                  if k in (*SHOWN, "dice", "pattern_accuracy")}
    facts = {"run": out.name, "best_epoch": fold["best_epoch"], "epochs_run": fold["epochs_run"],
             "validation_patch": validation, **json.loads(facts_file.read_text())}
    return out / fold["checkpoint"], facts


def _epoch_seconds(run: Path) -> float | None:
    """The summed per-epoch seconds of a run's metrics.csv (over a resume too), None when not recorded."""
    import csv

    try:
        with (run / "metrics.csv").open(newline="") as handle:
            return round(sum(float(row["seconds"]) for row in csv.DictReader(handle) if row.get("seconds")), 1)
    except (OSError, KeyError, ValueError):
        return None


def test_set(args: argparse.Namespace, work: Path) -> Path:
    from hep2edge.synth.writer import SynthConfig, parse_size, synthesize_dataset

    seed = args.seed + 1000
    data = work / f"cells-test-data-{args.test_patients}x{args.test_images_per_patient}-{args.test_size}-{seed}"
    if not (data / "labels.csv").is_file():
        say(f"synthesising the test set: {args.test_patients} x {args.test_images_per_patient} of {args.test_size}")
        synthesize_dataset(SynthConfig(out=data, patients=args.test_patients,
                                       images_per_patient=args.test_images_per_patient,
                                       size=parse_size(args.test_size), seed=seed))
    return data


def export(checkpoint: Path, folder: Path, val_data: Path) -> Path:
    """fp32 ONNX of `checkpoint` (run_export, its own checks on `val_data`); reused when newer than it."""
    onnx = folder / "model.onnx"
    if onnx.is_file() and onnx.stat().st_mtime >= checkpoint.stat().st_mtime:
        say(f"reusing {onnx}")
        return onnx
    shutil.rmtree(folder, ignore_errors=True)
    say(f"exporting {checkpoint} to fp32 ONNX")
    models = export_set(checkpoint, folder, val_data, ("fp32",), say, strict=True, val_images=4)
    if "fp32" not in models.onnx:
        raise SystemExit(f"export failed: {models.missing.get('fp32', 'no model.onnx')}")
    return models.onnx["fp32"]


@dataclass
class Row:
    """One scored way of finding cells: per-field scores, pooled class pixels, post-processing times."""

    label: str
    model: str
    inference: str
    method: str
    miou_from: str
    scores: list[dict[str, float]] = field(default_factory=list)
    truth_classes: list[np.ndarray] = field(default_factory=list)
    pred_classes: list[np.ndarray] = field(default_factory=list)
    stitch_ms: list[float] = field(default_factory=list)
    cells_ms: list[float] = field(default_factory=list)
    dense_ms: list[float] = field(default_factory=list)  # the full_dense part of cells_ms
    distance: list[dict[str, float]] = field(default_factory=list)  # per field: predicted vs true, inside cells
    infer_ms: list[float] = field(default_factory=list)
    cells_right: int = 0
    cells_with_pattern: int = 0
    true_cells: int = 0
    found_cells: int = 0

    def result(self) -> dict[str, Any]:
        from hep2edge.labels import PATTERNS
        from hep2edge.metrics import mean_instance_scores, mean_iou

        metrics = mean_instance_scores(self.scores)
        iou = mean_iou(np.concatenate(self.truth_classes), np.concatenate(self.pred_classes),
                       classes=("background", *PATTERNS))
        metrics["miou"] = float(iou["miou"])
        post = [s + c for s, c in zip(self.stitch_ms, self.cells_ms)]
        return {"label": self.label, "model": self.model, "inference": self.inference, "method": self.method,
                "miou_from": self.miou_from, "fields": len(self.scores), "metrics": metrics,
                "iou_per_class": iou["per_class"], "true_cells": self.true_cells, "found_cells": self.found_cells,
                "pooled_count_relative_error": abs(self.found_cells - self.true_cells) / max(self.true_cells, 1),
                "cell_pattern_accuracy": (self.cells_right / self.cells_with_pattern
                                          if self.cells_with_pattern else None),
                "timings_ms": {"inference": summarize(self.infer_ms), "stitch": summarize(self.stitch_ms),
                               "cells": summarize(self.cells_ms), "full_dense": summarize(self.dense_ms),
                               "post_processing": summarize(post)},
                "distance_inside_cells": ({k: float(np.mean([d[k] for d in self.distance])) for k in self.distance[0]}
                                          if self.distance else None),
                "targets": {k: verdict(metrics.get(k), t, higher) for k, (t, higher) in TARGETS.items()}}


def tile_outputs(backend: Any, gray: np.ndarray, step: int, overlap: int = 0) -> tuple[Any, Any, float]:
    """Tile mode as the runtime's HostExecutor runs it (`--tile-overlap`): (TileOutputs, grid, inference ms)."""
    from hep2edge.runtime.cells import to_u8
    from hep2edge.runtime.preprocess import frame_to_batch, threshold_masks
    from hep2edge.runtime.results import TileOutputs

    contract = backend.contract
    started = time.perf_counter()
    batch, grid = frame_to_batch(gray, contract, overlap)
    parts = [backend.infer(batch[i : i + step]) for i in range(0, len(batch), step)]
    outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    mask = threshold_masks(outputs["mask"], contract.mask_threshold)
    result = TileOutputs(mask=mask, pattern=outputs["pattern"], intensity=outputs["intensity"][:, 0],
                         dense={name: to_u8(outputs[name]) for name in contract.cell_outputs if name in outputs})
    return result, grid, (time.perf_counter() - started) * 1000


def field_outputs(backend: Any, gray: np.ndarray) -> tuple[Any, Any, float]:
    """Whole-field mode as the runtime's FieldExecutor runs it: (TileOutputs, grid, inference ms)."""
    from hep2edge.runtime.field import field_input, field_problem
    from hep2edge.runtime.field import field_outputs as to_outputs
    from hep2edge.runtime.preprocess import frame_grid

    contract = backend.contract
    grid = frame_grid(gray, contract)
    problem = field_problem(grid.height, grid.width, contract, backend.largest_field)
    if problem:
        raise SystemExit(f"whole-field inference refused: {problem}; use --no-field")
    started = time.perf_counter()
    result = to_outputs(backend.infer_field(field_input(gray, contract)), grid, contract)
    return result, grid, (time.perf_counter() - started) * 1000


def score(row: Row, outputs: Any, grid: Any, gray: np.ndarray, truth: np.ndarray, pattern: int,
          params: Any, infer_ms: float) -> None:
    """Post-process one field as the runtime's Writer does (timed), then score its cells and class map."""
    from hep2edge.labels import PATTERNS
    from hep2edge.metrics import instance_scores
    from hep2edge.runtime.cells import analyse_cells, full_dense
    from hep2edge.runtime.preprocess import full_mask

    started = time.perf_counter()
    mask, _ = full_mask(outputs, grid)
    stitched = time.perf_counter()
    dense = full_dense(outputs, grid)  # every dense head the model has, as the writer does for any --cells mode
    densed = time.perf_counter()
    cells = analyse_cells(row.method, mask, dense, gray, params, cell_kernels())
    done = time.perf_counter()
    row.dense_ms.append((densed - stitched) * 1000)
    row.infer_ms.append(infer_ms)
    row.stitch_ms.append((stitched - started) * 1000)
    row.cells_ms.append((done - stitched) * 1000)
    row.scores.append(instance_scores(truth, cells.labels))
    row.true_cells += int(len(np.unique(truth)) - 1)
    row.found_cells += len(cells.records)
    row.truth_classes.append(np.where(truth > 0, np.uint8(1 + pattern), np.uint8(0)).ravel())
    if "pattern_map" in dense:
        classes = dense["pattern_map"].argmax(axis=0).astype(np.uint8)
        for record in cells.records:
            if "pattern" in record:
                row.cells_with_pattern += 1
                row.cells_right += record["pattern"] == PATTERNS[pattern]
    else:  # no pattern map: the mask carries the image's pattern verdict (mean of its tiles', as results.py)
        top = int(np.argmax(outputs.pattern.mean(axis=0)))
        classes = np.where(mask > 0, np.uint8(1 + top), np.uint8(0))
    row.pred_classes.append(classes.ravel())
    if row.method == "distance":
        row.distance.append(distance_fit(dense["distance"][0], truth))


def distance_fit(distance: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The predicted distance map (uint8) against `distance_target(truth)` on true cell pixels: percentiles of
    each, their L1 and correlation (how sharp the peaks the watershed seeds from are)."""
    from hep2edge.instances import distance_target

    inside = truth > 0
    pred, target = distance[inside].astype(np.float32) / 255, distance_target(truth)[inside]
    fit = {f"pred_p{q}": float(np.percentile(pred, q)) for q in (50, 90, 99)}
    fit |= {f"target_p{q}": float(np.percentile(target, q)) for q in (50, 90, 99)}
    return fit | {"l1": float(np.abs(pred - target).mean()), "correlation": float(np.corrcoef(pred, target)[0, 1])}


def evaluate(onnx: Path, name: str, test: Path, args: argparse.Namespace) -> tuple[list[Row], str, dict[str, Any]]:
    """Every row of one model over the test set; (rows, backend description, the instance params used)."""
    from hep2edge.data.manifest import load_dataset
    from hep2edge.imageio import read_image, read_labels
    from hep2edge.instances import InstanceParams
    from hep2edge.runtime.backends import BackendConfig, create_backend

    with create_backend("onnxruntime", BackendConfig(onnx, max_batch=args.batch, device="cpu")) as backend:
        contract = backend.contract
        params = InstanceParams.from_dict(contract.instances)
        has_distance, has_map = "distance" in contract.cell_outputs, "pattern_map" in contract.cell_outputs
        miou_from = "pattern map" if has_map else "mask x image pattern"
        if has_distance:
            rows = [Row("with distance head (watershed), tiles", name, "tiles", "distance", miou_from)]
            if args.tile_overlap:
                rows.append(Row(f"with distance head (watershed), tiles overlapping >= {args.tile_overlap} px", name,
                                "overlap", "distance", miou_from))
            if contract.whole_field and not args.no_field:
                rows.append(Row("with distance head (watershed), whole field", name, "field", "distance", miou_from))
            rows.append(Row("same model, connected components of its mask, tiles", name, "tiles", "components",
                            miou_from))
        else:
            rows = [Row("without heads, connected components of the mask, tiles", name, "tiles", "components",
                        miou_from)]
        records = load_dataset(test).records
        for index, record in enumerate(records):
            gray = read_image(record.image)
            assert record.labels is not None, f"{record.image}: no label image"
            truth = read_labels(record.labels, (gray.shape[0], gray.shape[1]))
            modes = {"tiles": tile_outputs(backend, gray, backend.max_batch)}
            if any(r.inference == "overlap" for r in rows):
                modes["overlap"] = tile_outputs(backend, gray, backend.max_batch, args.tile_overlap)
            if any(r.inference == "field" for r in rows):
                modes["field"] = field_outputs(backend, gray)
            for row in rows:
                outputs, grid, infer_ms = modes[row.inference]
                score(row, outputs, grid, gray, truth, record.pattern, params, infer_ms)
            if index % 7 == 6 or index == len(records) - 1:
                say(f"{name}: {index + 1}/{len(records)} fields scored")
        return rows, backend.describe(), params.to_dict()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S")
    chosen = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise SystemExit(f"--models {args.models}: valid: {', '.join(MODELS)}")
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["HEP2EDGE_ORT_THREADS"] = str(args.threads)  # read by the ONNX Runtime backend
    data = training_data(args, work)
    test = test_set(args, work)
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for name in chosen:
        checkpoint, facts = train(args, work, data, name)
        onnx = export(checkpoint, work / f"cells-export-{facts['run']}", data)
        found, described, params = evaluate(onnx, name, test, args)
        rows += [r.result() for r in found]
        models[name] = {**facts, **MODELS[name], "checkpoint": str(checkpoint), "onnx": str(onnx),
                        "backend": described, "instance_params": params}
    return {"command": command_line(), "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average": [round(load, 2), round(os.getloadavg()[0], 2)], "threads": args.threads or None,
            "cell_kernels": cell_kernels().name,
            "training": {k: getattr(args, k) for k in (*TRAIN_KEYS, "distance_loss", "task_weights")},
            "test_set": {"patients": args.test_patients, "images": args.test_patients * args.test_images_per_patient,
                         "size": args.test_size, "seed": args.seed + 1000},
            "targets": {k: {"target": t, "higher_is_better": h} for k, (t, h) in TARGETS.items()},
            "models": models, "rows": rows}


def markdown(data: dict[str, Any]) -> str:
    t, test = data["training"], data["test_set"]
    env = data["environment"]
    lines = [f"# Per-cell accuracy on {data['machine']} ({data['date']})", "",
             f"`{data['command']}` ({data['started']} to {data['finished']})", "",
             f"CPU: {env.get('cpu')} ({env.get('cpus_usable')} cores usable); 1-minute load average "
             f"{data['load_average'][0]} at the start, {data['load_average'][1]} at the end; torch / ONNX Runtime "
             f"threads: {data['threads'] or 'their defaults'} (other work on the machine slows every step).", "",
             f"Models: {t['encoder']} U-Net (decoder {t['decoder_channels']}, pool levels {t['pool_levels']}), "
             f"{t['tile']} px tiles, trained here with `run_training` on {t['patients']} synthetic patients x "
             f"{t['images_per_patient']} images of {t['size']} (fold 0 of 5, {t['epochs']} epochs, batch "
             f"{t['batch_size']}, lr {t['lr']}, augment, seed {t['seed']}, distance loss "
             f"{t.get('distance_loss', 'l1')}), once with the distance and pattern-map heads and once without; "
             "fp32 ONNX on ONNX Runtime (CPU). "
             f"Test set: {test['patients']} fresh synthetic patients, {test['images']} fields of {test['size']} "
             f"(seed {test['seed']}), never seen in training or model selection. Scores per field, mean over "
             "fields (F1, precision, recall, DQ at IoU 0.5; centroid F1 within 12 px); mIoU pooled over every pixel "
             "(background + 7 patterns). Instance params (the contract's): "
             f"{next(iter(data['models'].values())).get('instance_params')}. "
             "Synthetic figures: not a claim about real I3A data.", ""]
    rows = data["rows"]
    lines += [markdown_table(["cells from", *SHOWN],
                             [[r["label"], *(fmt(r["metrics"].get(k), 3) for k in SHOWN)] for r in rows],
                             right=range(1, len(SHOWN) + 1)), ""]
    target_names = [f"{k} {'>=' if h else '<='} {fmt(v, 2)}" for k, (v, h) in TARGETS.items()]
    lines += ["Targets:", "",
              markdown_table(["cells from", *target_names],
                             [[r["label"], *(r["targets"][k] for k in TARGETS)] for r in rows]), ""]
    lines += ["Cells and post-processing per field (p50 ms; stitch = `full_mask`, cells = `full_dense` + "
              f"`analyse_cells` with the {data.get('cell_kernels', 'numpy')} cell kernels, as the runtime's writer, "
              "of which full_dense = stitching the dense heads' tiles; inference = the backend calls):", "",
              markdown_table(["cells from", "true cells", "found", "pooled count error", "cell pattern right",
                              "mIoU from", "inference ms", "stitch ms", "cells ms", "of which full_dense ms",
                              "post-processing ms"],
                             [[r["label"], r["true_cells"], r["found_cells"], fmt(r["pooled_count_relative_error"], 3),
                               fmt(r["cell_pattern_accuracy"], 3), r["miou_from"],
                               *(fmt(r["timings_ms"][k]["p50"], 1)
                                 for k in ("inference", "stitch", "cells", "full_dense", "post_processing"))]
                              for r in rows], right=(1, 2, 3, 4, 6, 7, 8, 9, 10)), ""]
    fits = [(r["label"], r["distance_inside_cells"]) for r in rows if r.get("distance_inside_cells")]
    if fits:
        keys = ("pred_p50", "pred_p90", "pred_p99", "target_p50", "target_p90", "target_p99", "l1", "correlation")
        lines += ["The distance head on true cell pixels against its training target (`distance_target` of the "
                  "truth; percentiles, L1, correlation; mean over fields). Markers are where it exceeds "
                  "marker_threshold, peaks split at depth h:", "",
                  markdown_table(["cells from", *keys],
                                 [[label, *(fmt(fit[k], 3) for k in keys)] for label, fit in fits],
                                 right=range(1, len(keys) + 1)), ""]
    lines += ["Training runs (train s: the epochs' summed seconds; resumed: continued from its last epoch after the "
              "process was killed; validation: fold 0's held-out tiles at the best epoch, patch level):", "",
              markdown_table(["model", "train s", "torch threads", "best epoch", "val dice", "val aji", "val pq",
                              "val f1", "val miou"],
                             [[name, fmt(m.get("train_seconds"), 0) + (" (resumed)" if m.get("resumed") else ""),
                               m.get("torch_threads", "-"),
                               f"{m['best_epoch']}/{m['epochs_run']}",
                               *(fmt(m["validation_patch"].get(k), 3) for k in ("dice", "aji", "pq", "f1", "miou"))]
                              for name, m in data["models"].items()], right=range(1, 9))]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with work_folder(args) as work:
        section = run(args, work)
    env = environment()
    data = {"machine": env["machine"], "date": today(), "environment": env, **section}
    name = "-".join(filter(None, (machine_name(with_gpu=True), "instances-accuracy", args.label)))
    written, md = write_json_md(result_path(args.out, name), data, markdown(data))
    say(f"wrote {written} and {md}")
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
