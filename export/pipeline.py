"""`run_export(ExportConfig) -> ExportReport`: checkpoint -> fp32 ONNX -> each precision -> verify -> engines.

Inputs are checked before anything is written (checkpoint, held-out and calibration tiles); every file
is written under a temporary name and renamed into place, so an interrupted export never leaves a
half-written model that looks valid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hep2edge.atomic import OutputWriteError
from hep2edge.contract import file_sha256
from hep2edge.errors import ConfigError, MissingExtraError
from hep2edge.export.checkpoint_select import SelectedCheckpoint, select_checkpoint
from hep2edge.export.config import ExportConfig
from hep2edge.export.field_check import FieldCheck, check_onnx_field
from hep2edge.export.onnx_contract import attach_contract
from hep2edge.export.onnx_graph import check_graph, export_checked_fp32, save_model_atomic
from hep2edge.export.precisions import PRECISIONS, ConversionInputs, Precision
from hep2edge.export.report import (
    OPENVINO_NOTE,
    ExportReport,
    PrecisionResult,
    field_check_line,
    write_report,
)
from hep2edge.export.tensorrt.engines import engines_for
from hep2edge.export.tiles import (
    TRAIN_KEYS,
    VAL_KEYS,
    TileSet,
    calibration_tiles,
    resolve_selection,
    verification_tiles,
)
from hep2edge.export.verify import (
    CELL_METRICS,
    TASK_METRICS,
    Outputs,
    onnx_outputs,
    openvino_available,
    openvino_outputs,
    output_diffs,
    task_metrics,
    torch_outputs,
)
from hep2edge.extras import missing_extra
from hep2edge.instances import InstanceParams
from hep2edge.progress import SILENT, Reporter
from hep2edge.runtime.backends.select import cpu_has_int8_dot
from hep2edge.train.checkpoint import LoadedCheckpoint, load_checkpoint
from hep2edge.workspace import resolve_out_dir, write_resolved_config

log = logging.getLogger(__name__)
Say = Callable[[str], None]
LOG_FILE = "export.log"
CELL_LIMITS = ("aji_drop", "miou_drop")


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
        self.source = f"{self.selection.shown} ({self.selection.origin})"
        self._args = (loaded.contract, config.int8.calib_images, config.int8.seed)
        self._tiles: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self._tiles is None:
            self._tiles = calibration_tiles(self.selection, *self._args)
        return self._tiles


def _resolve_calibration(config: ExportConfig, loaded: LoadedCheckpoint, ckpt: Path,
                         say: Say) -> CalibrationTiles | None:
    """Training tiles when a precision requires them (error if none resolve) or can use them (else None)."""
    wanted = {PRECISIONS.get(p).calibration for p in config.precisions}
    if "required" in wanted:
        return CalibrationTiles(config, loaded, ckpt)
    if "optional" in wanted:
        try:
            return CalibrationTiles(config, loaded, ckpt)
        except ConfigError:
            say("no training tiles resolved (--calib-data): AutoCast checks fp16 ranges on random inputs")
    return None


def _write_precision(name: str, out_dir: Path, loaded: LoadedCheckpoint, inputs: ConversionInputs) -> PrecisionResult:
    """Convert (fp32 is already written), attach the contract with this precision, check, save atomically."""
    precision = PRECISIONS.get(name)
    result = PrecisionResult(precision=name, file=precision.filename)
    if precision.convert is None:
        return result
    converted = precision.convert(inputs)
    attach_contract(converted.proto, loaded.contract.with_precision(name))
    check_graph(converted.proto, f"{name} graph")
    save_model_atomic(converted.proto, out_dir / precision.filename)
    result.notes.update(converted.notes)
    return result


def _convert_and_verify(name: str, out_dir: Path, prepared: Prepared, inputs: ConversionInputs,
                        reference: Reference, config: ExportConfig) -> tuple[PrecisionResult, Outputs | None]:
    """One precision's file, its figures and its ONNX Runtime outputs; a conversion failure is recorded (no
    outputs), not raised."""
    try:
        result = _write_precision(name, out_dir, prepared.loaded, inputs)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) from exc
    except (MissingExtraError, OutputWriteError):
        raise
    except Exception as exc:  # one precision failing must not stop the others
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        log.debug("conversion to %s failed", name, exc_info=True)
        return PrecisionResult(precision=name, error=f"conversion failed: {exc.__class__.__name__}: {first}"), None
    path = out_dir / str(result.file)
    result.sha256 = file_sha256(path)
    outputs = onnx_outputs(path, prepared.tiles.images, config.verify_batch)
    _verify(result, outputs, prepared, reference, config)
    if openvino_available():  # the file is judged as each installed runtime will run it
        under = PrecisionResult(precision=name, file=result.file, runtime="openvino")
        _verify(under, openvino_outputs(path, prepared.tiles.images, config.verify_batch), prepared, reference,
                config)
        note = openvino_int8_note(PRECISIONS.get(name), bool(under.failures), cpu_has_int8_dot())
        if note:
            result.notes[OPENVINO_NOTE] = note
        result.add_runtime(under)
    return result, outputs


SATURATION_NOTE = ("this CPU has no VNNI/AMX, so OpenVINO runs int8 with AVX2 instructions, whose 16-bit "
                   "intermediate sums saturate (the 'saturation issue' of OpenVINO's documentation); hep2edge runs "
                   "fp32 on such a CPU, and VNNI/AMX CPUs and TensorRT are not affected")


def openvino_int8_note(precision: Precision, failed: bool, int8_dot: bool) -> str:
    """Why an integer file may fail its limits under OpenVINO on this CPU ('' when that is not the case)."""
    return SATURATION_NOTE if precision.integer and failed and not int8_dot else ""


def _field_check(path: Path, tile_out: Outputs, prepared: Prepared, config: ExportConfig, say: Say) -> FieldCheck:
    """The fp32 file in whole-field mode against its tile mode; one line says whether the model may use it."""
    say("fp32: whole field (--inference field) against tiles on the held-out images (ONNX Runtime)")
    check = check_onnx_field(path, tile_out, prepared.tiles, prepared.loaded.contract, config.limits)
    say(field_check_line(check))
    return check


def _verify(result: PrecisionResult, outputs: Outputs, prepared: Prepared, reference: Reference,
            config: ExportConfig) -> None:
    """Output differences and task metrics against PyTorch fp32, checked against the limits."""
    result.set_diffs(output_diffs(reference.outputs, outputs))
    metrics = task_metrics(outputs, prepared.tiles, reference.threshold, reference.params)
    result.set_metrics(metrics, reference.metrics)
    result.check(config.limits)


@dataclass
class Prepared:
    """Inputs checked before anything is written."""

    chosen: SelectedCheckpoint
    loaded: LoadedCheckpoint
    tiles: TileSet
    calibration: CalibrationTiles | None


@dataclass
class Reference:
    """PyTorch fp32 on the held-out tiles: outputs and patch-level metrics (cell metrics with dense heads)."""

    outputs: Outputs
    metrics: dict[str, float]
    threshold: float
    params: InstanceParams | None = None  # how cells are found from mask + distance (the contract's)


def prepare(config: ExportConfig, say: Say) -> Prepared:
    """Checkpoint, held-out tiles and calibration tiles: every bad input fails here, before any output."""
    chosen = _checkpoint(config)
    say(f"checkpoint: {chosen.path} ({chosen.reason})")
    loaded = load_checkpoint(chosen.path)
    val = resolve_selection(config.val_data, "--val-data", loaded.data.get("data") or {}, VAL_KEYS, chosen.path)
    calibration = _resolve_calibration(config, loaded, chosen.path, say)
    say(f"reading held-out tiles from {val.shown} ({val.origin})")
    tiles = verification_tiles(val, loaded.contract, config.val_images, config.int8.seed)
    if calibration is not None:
        say(f"reading {config.int8.calib_images} calibration tiles from {calibration.source}")
        calibration()
    return Prepared(chosen, loaded, tiles, calibration)


def reference_run(prepared: Prepared, config: ExportConfig, say: Say) -> Reference:
    cells = " (cells scored per tile: AJI, PQ, F1, mIoU)" if prepared.tiles.instances is not None else ""
    say(f"PyTorch fp32 on {len(prepared.tiles)} held-out tiles{cells}")
    outputs = torch_outputs(prepared.loaded.model, prepared.tiles.images, config.verify_batch)
    contract = prepared.loaded.contract
    threshold, params = contract.mask_threshold, InstanceParams.from_dict(contract.instances)
    return Reference(outputs, task_metrics(outputs, prepared.tiles, threshold, params)["patch"], threshold, params)


def _limits(config: ExportConfig, heads: tuple[str, ...]) -> dict[str, float]:
    """The limits that apply: the cell-metric ones (AJI, mIoU) only for a model with dense heads."""
    limits = asdict(config.limits)
    return limits if heads else {k: v for k, v in limits.items() if k not in CELL_LIMITS}


def _new_report(prepared: Prepared, config: ExportConfig, out_dir: Path, reference: Reference) -> ExportReport:
    contract, calibration = prepared.loaded.contract, prepared.calibration
    return ExportReport(
        out_dir=str(out_dir), checkpoint=str(prepared.chosen.path), checkpoint_reason=prepared.chosen.reason,
        model_id=contract.model_id, contract=contract.to_dict(), limits=_limits(config, contract.cell_outputs),
        verification={"source": prepared.tiles.source, "tiles": len(prepared.tiles), "level": "patch"},
        calibration={"source": calibration.source, "tiles": config.int8.calib_images} if calibration else {},
        reference={k: reference.metrics[k] for k in (*TASK_METRICS, *CELL_METRICS) if k in reference.metrics},
    )


def run_export(config: ExportConfig, reporter: Reporter = SILENT) -> ExportReport:
    """Export, convert, verify and (optionally) build engines, telling `reporter` each step; the report says
    what passed."""
    say = reporter.say
    prepared = prepare(config, say)
    out_dir = resolve_out_dir(config.out, "export")
    config = replace(config, checkpoint=prepared.chosen.path, out=out_dir)
    write_resolved_config(out_dir, config)
    reference = reference_run(prepared, config, say)
    report = _new_report(prepared, config, out_dir, reference)
    say(f"exporting fp32 ONNX (opset {config.opset}, dynamic batch)")
    loaded = prepared.loaded
    fp32 = export_checked_fp32(loaded.model, loaded.contract, prepared.tiles.images[: config.verify_batch],
                               config.opset, config.simplify)
    fp32_path = out_dir / PRECISIONS.get("fp32").filename
    save_model_atomic(fp32.proto, fp32_path)
    report.simplification = fp32.note
    inputs = ConversionInputs(fp32_path, prepared.calibration, config.int8, out_dir / LOG_FILE)
    for name in config.precisions:
        also = " and OpenVINO" if openvino_available() else ""
        say(f"{name}: converting and verifying under ONNX Runtime{also} (CPU)")
        report.precisions[name], outputs = _convert_and_verify(name, out_dir, prepared, inputs, reference, config)
        if name == "fp32" and outputs is not None and config.field_check:
            report.whole_field = _field_check(fp32_path, outputs, prepared, config, say).to_dict()
    report.tensorrt = engines_for(config, out_dir, loaded.contract, say)
    write_report(report, out_dir)
    return report
