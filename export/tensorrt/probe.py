"""Is a real TensorRT importable? `tensorrt-stubs` alone leaves a stub-only `tensorrt` namespace package.

Such a package imports without error but has no `Builder`; libraries that test `import tensorrt`
(ModelOpt's ONNX tools among them) then crash on `trt.Logger`. `hide_stub_only_tensorrt()` makes
`import tensorrt` fail cleanly in that case, as it would without the stubs.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_PROBED: list[ModuleType | None] = []


def _probe() -> ModuleType | None:
    previous = sys.modules.get("tensorrt", ...)
    if previous is None:  # already hidden
        return None
    try:
        module = importlib.import_module("tensorrt")
    except ImportError:
        return None
    if hasattr(module, "Builder") and hasattr(module, "__version__"):
        return module
    return None


def real_tensorrt() -> ModuleType | None:
    """The TensorRT Python module when a working one is installed, else None."""
    if not _PROBED:
        _PROBED.append(_probe())
    return _PROBED[0]


def hide_stub_only_tensorrt() -> None:
    """If `tensorrt` is importable but is only type stubs, make `import tensorrt` raise ImportError.

    ModelOpt decides at import time (`modelopt.onnx.trt_utils.TRT_PYTHON_AVAILABLE`); if it was imported
    before this call, that flag is corrected too.
    """
    if real_tensorrt() is not None:
        return
    sys.modules["tensorrt"] = None  # type: ignore[assignment]
    trt_utils = sys.modules.get("modelopt.onnx.trt_utils")
    if trt_utils is not None and getattr(trt_utils, "TRT_PYTHON_AVAILABLE", False):
        trt_utils.TRT_PYTHON_AVAILABLE = False  # type: ignore[attr-defined]


def tensorrt_version() -> str | None:
    module = real_tensorrt()
    return str(module.__version__) if module is not None else None
