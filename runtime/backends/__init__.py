"""Backends: one interface, chosen by name (`auto`, `tensorrt`, `onnxruntime`, `openvino`, `torch`).

The registry holds loaders, so a backend module (and its heavy import) is imported only when chosen; this
module imports nothing heavy itself (the CLI reads the backend names from it).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hep2edge.extras import EXTRA_OF, import_optional
from hep2edge.registry import Registry
from hep2edge.runtime.settings import BackendConfig

if TYPE_CHECKING:
    from hep2edge.runtime.backends.base import Backend


@dataclass(frozen=True)
class BackendSpec:
    """Everything said about one backend: its module and class (imported only when chosen), the third-party
    module it needs (whose extra hep2edge.extras names), the model files it runs, and how to tell it can run."""

    module: str  # hep2edge.runtime.backends.<module>
    cls: str
    requires: str  # top-level third-party module
    suffixes: tuple[str, ...]  # model files it runs
    probe: Callable[[], bool] | None = None  # availability beyond `requires` importing (TensorRT: pycuda + GPU)

    @property
    def extra(self) -> str:
        return EXTRA_OF[self.requires]

    def load(self) -> type[Backend]:
        loaded = import_optional(f"hep2edge.runtime.backends.{self.module}")
        backend: type[Backend] = getattr(loaded, self.cls)
        return backend

    def available(self) -> bool:
        if self.probe is not None:
            return self.probe()
        return importlib.util.find_spec(self.requires) is not None


def _tensorrt_available() -> bool:
    from hep2edge.runtime.backends.tensorrt_backend import tensorrt_available

    return tensorrt_available()


BACKENDS: Registry[BackendSpec] = Registry("backend")
BACKENDS.add("tensorrt", BackendSpec("tensorrt_backend", "TensorRTBackend", "tensorrt", (".engine", ".plan"),
                                     _tensorrt_available))
BACKENDS.add("onnxruntime", BackendSpec("onnxruntime_backend", "OnnxRuntimeBackend", "onnxruntime", (".onnx",)))
BACKENDS.add("openvino", BackendSpec("openvino_backend", "OpenVinoBackend", "openvino", (".onnx",)))
BACKENDS.add("torch", BackendSpec("torch_backend", "TorchBackend", "torch", (".pt", ".pth", ".ckpt")))


def create_backend(name: str, config: BackendConfig) -> Backend:
    """An (inactive) backend of a registered name; `auto` must be resolved first (see select.py)."""
    return BACKENDS.get(name).load()(config)


def is_available(name: str) -> bool:
    """Whether a backend's dependencies import here (TensorRT also needs pycuda and a GPU)."""
    return BACKENDS.get(name).available()


__all__ = ["BACKENDS", "BackendConfig", "BackendSpec", "create_backend", "is_available"]
