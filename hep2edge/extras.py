"""Which pip extra installs each optional module, said once; importing one turns its absence into one line.

`hep2edge[train]` brings torch, `[onnx]` onnxruntime, ...; a command that finds a module missing raises
MissingExtraError ("... pip install 'hep2edge[<extra>]'") instead of a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType

from hep2edge.errors import MissingExtraError

EXTRA_OF: dict[str, str] = {
    "torch": "train",
    "torchvision": "train",
    "segmentation_models_pytorch": "train",
    "matplotlib": "train",
    "scipy": "train",
    "onnx": "export",
    "onnxslim": "export",
    "modelopt": "export",
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "numba": "fast",
    "llvmlite": "fast",
    "pycuda": "gpu",
    "cuda": "gpu",  # cuda-python (cuda.bindings): CUDA graph replay with TensorRT
    "tensorrt": "tensorrt",
    "fastapi": "review",
    "starlette": "review",
    "uvicorn": "review",
    "jinja2": "review",
    "python_multipart": "review",
    "hl7apy": "review",
}


def missing_extra(exc: ModuleNotFoundError, overrides: Mapping[str, str] | None = None) -> Exception:
    """MissingExtraError for a missing optional module (`overrides`: another extra for some modules on one
    command, e.g. `jetson` for build-engine), else `exc` itself (a real bug, not a missing install)."""
    top = (exc.name or "").split(".")[0]
    extras = {**EXTRA_OF, **(overrides or {})}
    return MissingExtraError(top, extras[top]) if top in extras else exc


def import_optional(module: str, overrides: Mapping[str, str] | None = None) -> ModuleType:
    """Import `module` (a hep2edge stage or a third-party one); a missing optional dependency is one line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, overrides) from exc
