"""CUDA graph capture and replay through the CUDA driver API (`cuda.bindings`), for the TensorRT backend.

pycuda does not expose stream capture, so the captured graph is driven by handle: pycuda's stream handle
is the raw CUstream the driver API takes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hep2edge.errors import MissingExtraError
from hep2edge.extras import EXTRA_OF


def _driver() -> ModuleType:
    try:
        return importlib.import_module("cuda.bindings.driver")
    except ImportError as exc:
        raise MissingExtraError("cuda.bindings (cuda-python)", EXTRA_OF["cuda"]) from exc


def _check(result: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    driver = _driver()
    if result[0] != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"CUDA graph: {what} failed ({result[0]})")
    return result[1:]


def capture(stream_handle: int, work: Callable[[], object]) -> Any:
    """Record what `work` enqueues on the stream and return an instantiated, launchable graph."""
    driver = _driver()
    mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    _check(driver.cuStreamBeginCapture(stream_handle, mode), "cuStreamBeginCapture")
    try:
        work()
    finally:
        (graph,) = _check(driver.cuStreamEndCapture(stream_handle), "cuStreamEndCapture")
    (graph_exec,) = _check(driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    _check(driver.cuGraphDestroy(graph), "cuGraphDestroy")
    return graph_exec


def launch(graph_exec: Any, stream_handle: int) -> None:
    _check(_driver().cuGraphLaunch(graph_exec, stream_handle), "cuGraphLaunch")


def destroy(graph_exec: Any) -> None:
    _check(_driver().cuGraphExecDestroy(graph_exec), "cuGraphExecDestroy")
