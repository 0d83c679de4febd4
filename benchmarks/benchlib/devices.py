"""What this machine can run, each answer with the reason a row is skipped when it cannot."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


def _missing(module: str, extra: str) -> Availability | None:
    if importlib.util.find_spec(module) is None:
        return Availability(False, f"{module} is not installed (pip install 'hep2edge[{extra}]')")
    return None


@cache
def torch_cuda() -> Availability:
    """torch with a usable CUDA device."""
    missing = _missing("torch", "train")
    if missing:
        return missing
    import torch

    if not torch.cuda.is_available():
        return Availability(False, f"no CUDA GPU visible to torch {torch.__version__}")
    return Availability(True, torch.cuda.get_device_name(0))


@cache
def onnxruntime_cuda() -> Availability:
    """onnxruntime's CUDA provider with a GPU present."""
    missing = _missing("onnxruntime", "onnx")
    if missing:
        return missing
    import onnxruntime as ort

    from hep2edge.runtime.backends.base import gpu_present
    from hep2edge.runtime.backends.onnxruntime_backend import CUDA_PROVIDER

    if CUDA_PROVIDER not in ort.get_available_providers():
        return Availability(False, f"onnxruntime {ort.__version__} has no CUDA provider (CPU build)")
    if not gpu_present():
        return Availability(False, "no GPU present")
    return Availability(True, "CUDA provider")


@cache
def openvino() -> Availability:
    """OpenVINO and the CPU capabilities it reports (BF16 native or not: the bf16 hint rows)."""
    missing = _missing("openvino", "openvino")
    if missing:
        return missing
    import openvino as ov

    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return Availability(True, f"openvino {ov.__version__}, CPU {', '.join(capabilities)}")


def native_bf16() -> bool:
    return openvino().ok and "BF16" in openvino().reason.split(", CPU ")[-1].split(", ")


@cache
def tensorrt() -> Availability:
    """TensorRT + pycuda + a GPU (what the tensorrt backend needs)."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError:
        return Availability(False, "TensorRT is not installed (no wheel reachable on the project's machines)")
    if not hasattr(module, "Runtime"):
        return Availability(False, "only tensorrt-stubs is installed, not TensorRT")
    pycuda = cuda_pycuda()
    if not pycuda.ok:
        return pycuda
    return Availability(True, f"TensorRT {module.__version__}")


@cache
def cuda_pycuda() -> Availability:
    """pycuda with a GPU (the CUDA preprocessing kernel and TensorRT buffers)."""
    missing = _missing("pycuda", "gpu")
    if missing:
        return missing
    try:
        importlib.import_module("pycuda.autoprimaryctx")
    except Exception as exc:  # pycuda raises its own errors without a driver or GPU
        return Availability(False, f"pycuda cannot open a GPU ({exc.__class__.__name__}: {str(exc)[:80]})")
    return Availability(True, "pycuda")


def any_gpu() -> bool:
    """Whether a GPU device node exists (checked without importing a CUDA library)."""
    from hep2edge.runtime.backends.base import gpu_present

    return gpu_present()
