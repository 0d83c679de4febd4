"""Resolve `--backend auto` and `--model` (a file, an export folder, or nothing = newest `runs/export/<n>`).

Preference in an export folder: a TensorRT engine whose sidecar matches this GPU and TensorRT, else the
fp16 ONNX where a GPU runs ONNX Runtime's CUDA provider, else (no NVIDIA GPU) OpenVINO on the INT8 file where
OpenVINO is installed, else ONNX Runtime on the fp32 ONNX (its CPU provider runs fp16/int8 graphs slower than
fp32). Every choice comes with the reason, which the CLI prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hep2edge.contract import precision_of_file
from hep2edge.errors import ConfigError, Hep2EdgeError
from hep2edge.runtime.backends import BACKENDS, is_available
from hep2edge.runtime.backends.base import gpu_present
from hep2edge.workspace import newest_run_dir

ENGINE_SUFFIXES = BACKENDS.get("tensorrt").suffixes
ONNX_SUFFIXES = BACKENDS.get("onnxruntime").suffixes
CHECKPOINT_SUFFIXES = BACKENDS.get("torch").suffixes
PRECISION_ORDER = ("fp16", "fp32", "int8")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    backend: str
    model: Path
    reason: str


@dataclass(frozen=True)
class OnnxRule:
    """Which backend runs ONNX files here, the precisions in order of preference, and why."""

    backend: str
    order: tuple[str, ...]
    why: str


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # CPU features that make int8 convolutions fast


def cpu_has_int8_dot(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has VNNI or AMX int8 dot products (without them OpenVINO's int8 is no faster than fp32)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in INT8_DOT_FLAGS)


def onnx_rule(backend: str = "auto") -> OnnxRule:
    """For `auto`: ONNX Runtime where an NVIDIA GPU is (CUDA provider, fp16 first), else OpenVINO if installed
    (INT8 first where the CPU has VNNI/AMX, which OpenVINO uses for Q/DQ; else fp32), else ONNX Runtime on the
    CPU (fp32 first)."""
    if backend in ("auto", "onnxruntime") and gpu_present():
        return OnnxRule("onnxruntime", ("fp16", "fp32", "int8"), "a GPU is present")
    if backend == "openvino" or (backend == "auto" and is_available("openvino")):
        if cpu_has_int8_dot():
            return OnnxRule("openvino", ("int8", "fp32", "fp16"), "no NVIDIA GPU: OpenVINO, int8 on VNNI/AMX")
        return OnnxRule("openvino", ("fp32", "int8", "fp16"), "no NVIDIA GPU: OpenVINO fp32 (no VNNI/AMX for int8)")
    return OnnxRule("onnxruntime", ("fp32", "fp16", "int8"), "no GPU: fp32 is fastest on a CPU")


def backend_for_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in ONNX_SUFFIXES:
        return onnx_rule().backend
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch"
    raise ConfigError(
        f"{path}: cannot tell the backend from '{suffix}'; use .engine, .onnx or .pt, or pass `backend`"
    )


def _by_precision(files: list[Path], order: tuple[str, ...]) -> list[Path]:
    """`files` whose name states a precision in `order` (hep2edge.contract's file-name rule), best first."""
    rank = {p: i for i, p in enumerate(order)}
    known = [(rank[p], f) for f in files if (p := precision_of_file(f.name)) in rank]
    return [f for _, f in sorted(known, key=lambda pair: pair[0])]


def _engine_for_this_gpu(folder: Path) -> tuple[Path | None, str]:
    engines = _by_precision([p for p in folder.iterdir() if p.suffix in ENGINE_SUFFIXES], PRECISION_ORDER)
    if not engines:
        return None, "no TensorRT engine in the folder"
    if not is_available("tensorrt"):
        return None, f"{engines[0].name} skipped: TensorRT/pycuda/GPU not available here"
    from hep2edge.runtime.backends.engine_sidecar import read_sidecar
    from hep2edge.runtime.backends.tensorrt_backend import current_gpu, import_pycuda, import_tensorrt

    gpu = current_gpu(import_pycuda())
    version = import_tensorrt().__version__
    notes = []
    for engine in engines:
        try:
            why = read_sidecar(engine).mismatch(version, *gpu)
        except (Hep2EdgeError, OSError) as exc:  # the reader turns every sidecar fault into a ContractError
            why = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            log.warning("%s skipped: %s", engine, why)
        if why is None:
            return engine, f"engine built for this GPU ({gpu[0]})"
        notes.append(f"{engine.name}: {why}")
    return None, "; ".join(notes)


def _pick_in_folder(folder: Path, backend: str) -> Selection:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if backend in ("auto", "tensorrt"):
        engine, note = _engine_for_this_gpu(folder)
        if engine is not None:
            return Selection("tensorrt", engine, note)
        if backend == "tensorrt":
            raise ConfigError(f"{folder}: no usable engine ({note}); build one with `hep2edge build-engine`")
    if backend in ("auto", "onnxruntime", "openvino"):
        rule = onnx_rule(backend)
        onnx = _by_precision([p for p in files if p.suffix in ONNX_SUFFIXES], rule.order)
        if onnx:
            prefix = f"{note}; " if backend == "auto" else ""
            return Selection(rule.backend, onnx[0], f"{prefix}{onnx[0].name} ({rule.why})")
    checkpoints = [p for p in files if p.suffix in CHECKPOINT_SUFFIXES]
    if backend in ("auto", "torch") and checkpoints:
        return Selection("torch", checkpoints[0], f"checkpoint {checkpoints[0].name}")
    raise ConfigError(f"{folder}: no model file for backend '{backend}' (expected .engine, .onnx or .pt)")


def select_model(model: Path | None, backend: str = "auto") -> Selection:
    """Resolve the backend name and model file, with a one-line reason."""
    if backend != "auto":
        BACKENDS.get(backend)  # unknown names fail here, listing the valid ones
    if model is None:
        newest = newest_run_dir("export")
        if newest is None:
            raise ConfigError("no model given and no runs/export/<n> found: pass `model` FILE or run `hep2edge export`")
        picked = _pick_in_folder(newest, backend)
        return Selection(picked.backend, picked.model, f"newest export {newest}: {picked.reason}")
    if model.is_dir():
        return _pick_in_folder(model, backend)
    if not model.is_file():
        raise ConfigError(f"{model}: no such model file or folder")
    if backend != "auto":
        return Selection(backend, model, "as requested")
    chosen = backend_for_file(model)
    if not is_available(chosen):
        extra = BACKENDS.get(chosen).extra
        raise ConfigError(f"{model}: needs the {chosen} backend, not installed here: pip install 'hep2edge[{extra}]'")
    return Selection(chosen, model, f"{model.suffix} file")
