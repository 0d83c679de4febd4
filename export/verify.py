"""Compare each precision's ONNX file under ONNX Runtime (and OpenVINO, where installed) with PyTorch fp32 on
held-out tiles.

Output differences (max / mean abs, relative error) and task metrics (patch-level Dice, pattern and
intensity accuracy, with image level kept for the report) computed with hep2edge.metrics; a model with dense
heads (distance, pattern_map) is also scored per cell as validation scores it (hep2edge.train.cell_eval).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.contract import CELL_OUTPUTS
from hep2edge.export.onnx_export import OUTPUT_NAMES
from hep2edge.export.tiles import TileSet
from hep2edge.instances import InstanceParams
from hep2edge.metrics import PatchPredictions, evaluate_levels, segmentation_counts

Outputs = dict[str, np.ndarray]
TASK_METRICS = ("dice", "pattern_accuracy", "intensity_accuracy")
CELL_METRICS = ("aji", "pq", "f1", "miou")  # patch level, only for a model with dense heads


def compared_outputs(names: Iterable[str]) -> tuple[str, ...]:
    """The outputs verification compares: mask, pattern, intensity and the dense heads among `names`."""
    present = set(names)
    return (*OUTPUT_NAMES, *(name for name in CELL_OUTPUTS if name in present))


def torch_outputs(model: Any, images: np.ndarray, batch: int = 8) -> Outputs:
    """PyTorch fp32 probabilities ((N,1,t,t), (N,7), (N,1)[, dense heads]) through the same heads as the ONNX graph."""
    import torch

    from hep2edge.export.onnx_export import ProbabilityHeads, graph_outputs

    wrapper = ProbabilityHeads(model).eval()
    names = graph_outputs(model)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in compared_outputs(names)}
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            outputs = wrapper(torch.from_numpy(np.ascontiguousarray(images[start : start + batch])))
            for name, value in zip(names, outputs):
                if name in chunks:
                    chunks[name].append(value.float().numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def onnx_outputs(path: Path, images: np.ndarray, batch: int = 8) -> Outputs:
    from hep2edge.export.onnx_graph import run_onnx

    return run_onnx(Path(path), images, batch)


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def openvino_outputs(path: Path, images: np.ndarray, batch: int = 8) -> Outputs:
    """Outputs of an ONNX file under OpenVINO on the CPU (f32 hint: Q/DQ runs as int8), as the runtime runs it."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    names = compared_outputs(port.get_any_name() for port in compiled.outputs)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(images), batch):
        results = request.infer({0: np.ascontiguousarray(images[start : start + batch], dtype=np.float32)})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        for name in names:
            chunks[name].append(np.array(by_name[name], dtype=np.float32))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


@dataclass(frozen=True)
class OutputDiff:
    max_abs_diff: float
    mean_abs_diff: float
    rel_error: float  # max abs diff / max abs reference value


def output_diffs(reference: Outputs, candidate: Outputs) -> dict[str, OutputDiff]:
    """Per compared output (the reference's dense heads too): max and mean absolute difference, relative error."""
    diffs: dict[str, OutputDiff] = {}
    for name in compared_outputs(reference):
        if name not in candidate:
            raise ValueError(f"output '{name}' is missing; PyTorch gives it")
        ref, out = reference[name].astype(np.float64), candidate[name].astype(np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output '{name}' has shape {out.shape}, PyTorch gives {ref.shape}")
        delta = np.abs(ref - out)
        scale = max(float(np.abs(ref).max()), 1e-12)
        diffs[name] = OutputDiff(float(delta.max()), float(delta.mean()), float(delta.max()) / scale)
    return diffs


def predictions(outputs: Outputs, tiles: TileSet, threshold: float) -> PatchPredictions:
    """Per-tile predictions against the ground truth; pixels in the pad are never foreground.

    Foreground where p > threshold, as in training (train/evaluate.py) and the runtime (threshold_masks).
    """
    counts = segmentation_counts(outputs["mask"][:, 0] > threshold, tiles.masks, tiles.valid)
    return PatchPredictions(
        image_ids=tiles.image_ids,
        patient_ids=tiles.patient_ids,
        pattern_true=tiles.pattern,
        pattern_prob=outputs["pattern"].astype(np.float64),
        intensity_true=tiles.intensity,
        intensity_prob=outputs["intensity"][:, 0].astype(np.float64),
        seg_counts=counts,
    )


def cell_metrics(outputs: Outputs, tiles: TileSet, threshold: float,
                 params: InstanceParams | None = None) -> dict[str, float]:
    """AJI, PQ, F1 (cells per tile from mask + distance, averaged) and the pattern map's mIoU; {} without heads."""
    from hep2edge.train.cell_eval import CellScorer

    if tiles.instances is None or not any(name in outputs for name in CELL_OUTPUTS):
        return {}
    scorer = CellScorer(params)
    distance = outputs["distance"][:, 0] if "distance" in outputs else None
    predicted = outputs["pattern_map"].argmax(axis=1).astype(np.uint8) if "pattern_map" in outputs else None
    scorer.add_maps(outputs["mask"][:, 0] > threshold, tiles.valid, tiles.instances, tiles.classes, distance,
                    predicted)
    scores = scorer.metrics()
    return {name: scores[name] for name in CELL_METRICS if name in scores}


def task_metrics(outputs: Outputs, tiles: TileSet, threshold: float,
                 params: InstanceParams | None = None) -> dict[str, dict[str, float]]:
    """{'patch': {...}, 'image': {...}} scalar metrics of one set of outputs; patch level has the cell metrics too."""
    levels = evaluate_levels(predictions(outputs, tiles, threshold))
    return {"patch": levels["patch"] | cell_metrics(outputs, tiles, threshold, params), "image": levels["image"]}
