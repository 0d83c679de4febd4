"""Backends: one interface, chosen by name (`auto`, `tensorrt`, `onnxruntime`, `openvino`, `torch`).

The registry holds loaders, so a backend module (and its heavy import) is imported only when chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from hep2edge.extras import import_optional
from hep2edge.registry import Registry
from hep2edge.runtime.backends.base import Backend, BackendConfig

BackendLoader = Callable[[], type[Backend]]
BACKENDS: Registry[BackendLoader] = Registry("backend")


MODULE_OF = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}  # what each backend imports


def _lazy(module: str, cls: str) -> BackendLoader:
    def load() -> type[Backend]:
        loaded = import_optional(f"hep2edge.runtime.backends.{module}")
        backend: type[Backend] = getattr(loaded, cls)
        return backend

    return load


BACKENDS.add("tensorrt", _lazy("tensorrt_backend", "TensorRTBackend"))
BACKENDS.add("onnxruntime", _lazy("onnxruntime_backend", "OnnxRuntimeBackend"))
BACKENDS.add("openvino", _lazy("openvino_backend", "OpenVinoBackend"))
BACKENDS.add("torch", _lazy("torch_backend", "TorchBackend"))


def create_backend(name: str, config: BackendConfig) -> Backend:
    """An (inactive) backend of a registered name; `auto` must be resolved first (see select.py)."""
    return BACKENDS.get(name)()(config)


def is_available(name: str) -> bool:
    """Whether a backend's dependencies import here (TensorRT also needs pycuda and a GPU)."""
    if name == "tensorrt":
        from hep2edge.runtime.backends.tensorrt_backend import tensorrt_available

        return tensorrt_available()
    return importlib.util.find_spec(MODULE_OF[name]) is not None


__all__ = ["BACKENDS", "Backend", "BackendConfig", "create_backend", "is_available"]
