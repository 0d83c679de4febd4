"""`run_export(ExportConfig) -> ExportReport`: checkpoint -> fp32 ONNX -> each precision -> verify -> engines.

Inputs are checked before anything is written (checkpoint, held-out and calibration tiles); every file
is written under a temporary name and renamed into place, so an interrupted export never leaves a
half-written model that looks valid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from hep2edge.atomic import OutputWriteError
from hep2edge.contract import file_sha256
from hep2edge.errors import MissingExtraError
from hep2edge.export.checkpoint_select import SelectedCheckpoint, select_checkpoint
from hep2edge.export.config import ExportConfig
from hep2edge.export.engines import engines_for
from hep2edge.export.onnx_graph import check_graph, export_checked_fp32, save_model_atomic
from hep2edge.export.precisions import PRECISIONS, ConversionInputs
from hep2edge.export.report import ExportReport, PrecisionResult, write_report
from hep2edge.export.tiles import (
    TRAIN_KEYS,
    VAL_KEYS,
    TileSet,
    calibration_tiles,
    resolve_selection,
    verification_tiles,
)
from hep2edge.export.verify import Outputs, onnx_outputs, output_diffs, task_metrics, torch_outputs
from hep2edge.train.checkpoint import LoadedCheckpoint, load_checkpoint
from hep2edge.workspace import resolve_out_dir, write_resolved_config

log = logging.getLogger(__name__)
EXTRA_OF = {"modelopt": "export", "onnxruntime": "onnx", "onnxslim": "export", "onnx": "export"}


def missing_extra(exc: ModuleNotFoundError) -> Exception:
    top = (exc.name or "").split(".")[0]
    return MissingExtraError(top, EXTRA_OF[top]) if top in EXTRA_OF else exc

Say = Callable[[str], None]
LOG_FILE = "export.log"


def _checkpoint(config: ExportConfig) -> SelectedCheckpoint:
    """The given checkpoint, or the best one of the newest training run."""
    if config.checkpoint is not None:
        return SelectedCheckpoint(Path(config.checkpoint), "given")
    return select_checkpoint()


class CalibrationTiles:
    """Calibration tiles read once, on first call; `source` says where they come from."""

    def __init__(self, config: ExportConfig, loaded: LoadedCheckpoint, ckpt: Path) -> None:
        data = loaded.data.get("data") or {}
        self.selection = resolve_selection(config.calib_data, "--calib-data", data, TRAIN_KEYS, ckpt)
        self.source = f"{self.selection.root} ({self.selection.origin})"
        self._args = (loaded.contract, config.int8.calib_images, config.int8.seed)
        self._tiles: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self._tiles is None:
            self._tiles = calibration_tiles(self.selection, *self._args)
        return self._tiles


def _score(result: PrecisionResult, outputs: Outputs, reference: Outputs, ref_metrics: dict[str, float],
           tiles: TileSet, config: ExportConfig, threshold: float) -> None:
    result.set_diffs(output_diffs(reference, outputs))
    result.set_metrics(task_metrics(outputs, tiles, threshold), ref_metrics)
    result.check(config.limits)


def _write_precision(name: str, fp32_path: Path, out_dir: Path, loaded: LoadedCheckpoint,
                     inputs: ConversionInputs) -> PrecisionResult:
    precision = PRECISIONS.get(name)
    result = PrecisionResult(precision=name, file=precision.filename)
    if precision.convert is None:
        return result
    converted = precision.convert(inputs)
    from hep2edge.export.onnx_export import attach_contract

    attach_contract(converted.proto, loaded.contract.with_precision(name))
    check_graph(converted.proto, f"{name} graph")
    save_model_atomic(converted.proto, out_dir / precision.filename)
    result.notes.update(converted.notes)
    return result


def run_export(config: ExportConfig, say: Say = log.info) -> ExportReport:
    """Export, convert, verify and (optionally) build engines; the report says what passed."""
    chosen = _checkpoint(config)
    say(f"checkpoint: {chosen.path} ({chosen.reason})")
    loaded = load_checkpoint(chosen.path)
    data = loaded.data.get("data") or {}
    val = resolve_selection(config.val_data, "--val-data", data, VAL_KEYS, chosen.path)
    needs_calibration = any(PRECISIONS.get(p).needs_calibration for p in config.precisions)
    calibration = CalibrationTiles(config, loaded, chosen.path) if needs_calibration else None
    say(f"reading held-out tiles from {val.root} ({val.origin})")
    tiles = verification_tiles(val, loaded.contract, config.val_images, config.int8.seed)
    if calibration is not None:
        say(f"reading {config.int8.calib_images} calibration tiles from {calibration.source}")
        calibration()
    out_dir = resolve_out_dir(config.out, "export")
    config = replace(config, checkpoint=chosen.path, out=out_dir)
    write_resolved_config(out_dir, config)
    report = ExportReport(
        out_dir=str(out_dir), checkpoint=str(chosen.path), checkpoint_reason=chosen.reason,
        model_id=loaded.contract.model_id, contract=loaded.contract.to_dict(), limits=asdict(config.limits),
        verification={"source": tiles.source, "tiles": len(tiles), "level": "patch"},
        calibration={"source": calibration.source, "tiles": config.int8.calib_images} if calibration else {},
    )
    say(f"PyTorch fp32 on {len(tiles)} held-out tiles")
    reference = torch_outputs(loaded.model, tiles.images, config.verify_batch)
    threshold = loaded.contract.mask_threshold
    ref_metrics = task_metrics(reference, tiles, threshold)["patch"]
    report.reference = {k: ref_metrics[k] for k in ("dice", "pattern_accuracy", "intensity_accuracy")}

    say(f"exporting fp32 ONNX (opset {config.opset}, dynamic batch)")
    fp32 = export_checked_fp32(loaded.model, loaded.contract, tiles.images[: config.verify_batch],
                               config.opset, config.simplify)
    fp32_path = out_dir / PRECISIONS.get("fp32").filename
    save_model_atomic(fp32.proto, fp32_path)
    report.simplification = fp32.note
    inputs = ConversionInputs(fp32_path, calibration or (lambda: tiles.images[:0]), config.int8, out_dir / LOG_FILE)
    for name in config.precisions:
        say(f"{name}: converting and verifying under ONNX Runtime CPU")
        try:
            result = _write_precision(name, fp32_path, out_dir, loaded, inputs)
        except ModuleNotFoundError as exc:
            raise missing_extra(exc) from exc
        except (MissingExtraError, OutputWriteError):
            raise
        except Exception as exc:  # noqa: BLE001 - one precision failing must not stop the others
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            result = PrecisionResult(precision=name, error=f"conversion failed: {exc.__class__.__name__}: {first}")
            log.debug("conversion to %s failed", name, exc_info=True)
            report.precisions[name] = result
            continue
        path = out_dir / str(result.file)
        result.sha256 = file_sha256(path)
        _score(result, onnx_outputs(path, tiles.images, config.verify_batch), reference, ref_metrics, tiles,
               config, threshold)
        report.precisions[name] = result
    report.tensorrt = engines_for(config, out_dir, loaded.contract, say)
    write_report(report, out_dir)
    return report
