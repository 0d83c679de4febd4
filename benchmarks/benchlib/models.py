"""The models a speed benchmark runs: a checkpoint, its ONNX files per precision and, with TensorRT, engines.

Speed does not depend on what the weights learned, so the speed benchmarks export a randomly initialised
model of the real architecture (efficientnet-b4, 384 px tiles by default) through the product's own
`run_export`: the same fp32 / fp16 (AutoCast) / int8 (Q/DQ) files a user ships. A prepared folder holds
`models.json` and is reused (`--models DIR`, or the cache run_all keeps between scripts).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hep2edge.contract import PRECISION_NAMES, model_file_name

MANIFEST = "models.json"
ONNX_FILES = {precision: model_file_name(precision) for precision in PRECISION_NAMES}
Say = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """The architecture timed: encoder, decoder widths, tile size."""

    encoder: str = "efficientnet-b4"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    tile: int = 384
    pool_levels: int = 1
    heads: bool = False  # the distance and pattern-map heads (per-cell analysis)

    def describe(self) -> str:
        widths = ",".join(map(str, self.decoder_channels))
        heads = " + distance and pattern-map heads" if self.heads else ""
        return f"{self.encoder} U-Net (decoder {widths}){heads}, {self.tile} px tiles"


@dataclass
class ModelSet:
    """What a prepared folder holds; `missing` says why a precision or engine is not there."""

    folder: Path
    description: str = ""
    checkpoint: Path | None = None
    onnx: dict[str, Path] = field(default_factory=dict)
    engines: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)  # the export's verdict: passed, failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["checkpoint"] = self.checkpoint.name if self.checkpoint else None
        data["onnx"] = {k: v.name for k, v in self.onnx.items()}
        data["engines"] = {k: v.name for k, v in self.engines.items()}
        return data

    def contract(self) -> Any:
        """The model contract (tile, normalisation, ...) read from an ONNX file, else the checkpoint."""
        if self.onnx:
            from hep2edge.runtime.backends import BackendConfig, create_backend

            with create_backend("onnxruntime", BackendConfig(next(iter(self.onnx.values())), 1, "cpu")) as opened:
                return opened.contract
        if self.checkpoint is None:
            raise FileNotFoundError(f"{self.folder}: neither ONNX files nor a checkpoint")
        from hep2edge.train.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint).contract

    def save(self) -> None:
        (self.folder / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ModelSet:
        """A prepared folder (models.json), or any `hep2edge export` folder (files found by name)."""
        folder = Path(folder)
        if (folder / MANIFEST).is_file():
            data = json.loads((folder / MANIFEST).read_text())
            return cls(folder, data.get("description", ""),
                       folder / data["checkpoint"] if data.get("checkpoint") else None,
                       {k: folder / v for k, v in data.get("onnx", {}).items()},
                       {k: folder / v for k, v in data.get("engines", {}).items()},
                       data.get("missing", {}), data.get("spec", {}), data.get("export", {}))
        return scan_folder(folder)


def _checkpoint_in(folder: Path) -> Path | None:
    checkpoints = sorted(folder.glob("*.pt"))
    if checkpoints:
        return checkpoints[0]
    config = folder / "config.yaml"  # an export folder records the checkpoint it came from
    if config.is_file():
        recorded = (yaml.safe_load(config.read_text()) or {}).get("checkpoint")
        if recorded and Path(recorded).is_file():
            return Path(recorded)
    return None


def scan_folder(folder: Path) -> ModelSet:
    """Find the checkpoint, model[.fp16|.int8].onnx and model.<precision>.engine files in a folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    found = ModelSet(folder, f"models in {folder}", _checkpoint_in(folder))
    for precision, name in ONNX_FILES.items():
        if (folder / name).is_file():
            found.onnx[precision] = folder / name
        if (folder / model_file_name(precision, ".engine")).is_file():
            found.engines[precision] = folder / model_file_name(precision, ".engine")
    return found


def random_checkpoint(spec: ModelSpec, path: Path, seed: int = 0) -> Path:
    """A randomly initialised multi-task model of `spec`, saved as a hep2edge checkpoint."""
    import torch

    from hep2edge.contract import ModelContract
    from hep2edge.train.checkpoint import make_checkpoint, save_checkpoint
    from hep2edge.train.model import ModelConfig, build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(encoder=spec.encoder, decoder_channels=spec.decoder_channels,
                                    pool_levels=spec.pool_levels, dropout=0.0, distance=spec.heads,
                                    pattern_map=spec.heads))
    contract = ModelContract(tile=spec.tile, encoder=spec.encoder)
    save_checkpoint(path, make_checkpoint(model.eval(), contract, fold=0, epoch=0, metrics={}, random_init=True))
    return path


def _exportable(precisions: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The precisions this machine can export, and why the others cannot."""
    if importlib.util.find_spec("onnx") is None:
        return (), {p: "onnx is not installed (pip install 'hep2edge[export]')" for p in precisions}
    if importlib.util.find_spec("modelopt") is None:
        why = "nvidia-modelopt is not installed (pip install 'hep2edge[export]')"
        return ("fp32",), {p: why for p in precisions if p != "fp32"}
    return precisions, {}


def export_set(checkpoint: Path, folder: Path, val_data: Path, precisions: tuple[str, ...], say: Say,
               engine_batch: tuple[int, int, int] = (1, 15, 32), calib_images: int = 16,
               calib_data: Path | None = None, strict: bool = False, val_images: int = 1) -> ModelSet:
    """Export `checkpoint` into `folder` with the product's run_export; without `strict` nothing fails on
    accuracy (a random model's figures mean nothing). Calibration: `calib_data`, else the checkpoint's
    training patients, else `val_data`."""
    from hep2edge.export.config import BatchProfile, ExportConfig, Int8Options, Limits
    from hep2edge.export.pipeline import run_export
    from hep2edge.progress import LineReporter

    from .devices import tensorrt

    wanted, missing = _exportable(precisions)
    result = ModelSet(folder, checkpoint=checkpoint, missing=missing)
    if not wanted:
        return result
    config = ExportConfig(checkpoint=checkpoint, out=folder, precisions=wanted,
                          calib_data=calib_data if calib_data or strict else val_data, val_data=val_data,
                          val_images=val_images, int8=Int8Options(calib_images=calib_images),
                          limits=Limits() if strict else Limits(1.0, 1.0, 1.0, 1.0, 1.0),
                          batch=BatchProfile(*engine_batch), engine=tensorrt().ok,
                          simplify=importlib.util.find_spec("onnxslim") is not None)
    try:
        report = run_export(config, LineReporter(say))
    except Exception as exc:  # without ONNX files the torch rows are still worth measuring
        why = f"export failed: {exc.__class__.__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        say(why)
        result.missing.update({p: why for p in wanted})
        return result
    result.export = {"passed": report.passed, "failures": report.failures()}
    for name, precision in report.precisions.items():
        if precision.error:
            result.missing[name] = precision.error
        elif (folder / ONNX_FILES[name]).is_file():
            result.onnx[name] = folder / ONNX_FILES[name]
    for engine in report.tensorrt.get("engines", []):
        result.engines[engine.split(".")[1]] = folder / engine  # model.<precision>.engine
    if not tensorrt().ok:
        result.missing["engines"] = tensorrt().reason
    return result


def prepare_random_set(spec: ModelSpec, folder: Path, data: Path, precisions: tuple[str, ...], say: Say,
                       engine_batch: tuple[int, int, int] = (1, 15, 32), calib_images: int = 16) -> ModelSet:
    """A random-weight model of `spec` exported to every precision this machine can write (cached)."""
    if (folder / MANIFEST).is_file():
        cached = ModelSet.load(folder)
        same = {"heads": False, **cached.spec} == _spec_dict(spec)  # sets made before `heads` have none
        if same and cached.contract().whole_field:  # older exports lack the field graph
            say(f"reusing the models in {folder}")
            return cached
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    say(f"preparing {spec.describe()} with random weights in {folder}")
    checkpoint = random_checkpoint(spec, folder / "checkpoint.pt")
    models = export_set(checkpoint, folder, data, precisions, say, engine_batch, calib_images)
    models.description = f"{spec.describe()}, random weights (speed does not depend on them)"
    models.spec = _spec_dict(spec)
    models.save()
    return models


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["decoder_channels"] = list(spec.decoder_channels)
    return data
