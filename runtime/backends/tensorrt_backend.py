"""TensorRT 10 backend: a serialized engine run with pycuda buffers, tensors bound by name.

The engine's sidecar JSON (contract + TensorRT version + GPU) is checked against the running TensorRT and
GPU before deserialising. Pinned host and device buffers are sized for `max_batch`, addresses are bound
once with `set_tensor_address`, and each call is H2D -> `execute_async_v3` -> D2H on one stream.
A batch smaller than the profile's minimum (a fixed-batch engine) runs padded to it. With `cuda_graph`,
full batches replay one captured CUDA graph (needs `cuda.bindings`). A CUDA context is current per thread
and the pipeline activates the backend in one thread and infers in another: every call runs inside
`on_this_thread()`, which pushes the primary context where it is not current and pops it afterwards (pycuda
aborts the process when a thread ends with a context still pushed). TensorRT and pycuda are imported in
`activate()`, so this module imports anywhere.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError, ContractError, MissingExtraError
from hep2edge.extras import EXTRA_OF
from hep2edge.runtime.backends.base import Backend, check_io
from hep2edge.runtime.backends.engine_sidecar import EngineSidecar, read_sidecar

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


def import_tensorrt() -> ModuleType:
    """The real TensorRT module (not the stubs-only namespace package) or MissingExtraError."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise MissingExtraError("tensorrt", EXTRA_OF["tensorrt"]) from exc
    if not hasattr(module, "Runtime"):  # tensorrt-stubs alone installs an importable namespace package
        raise MissingExtraError("tensorrt", EXTRA_OF["tensorrt"])
    return module


def import_pycuda() -> ModuleType:
    """pycuda.driver with the device's primary context made current (shared with torch if it runs too)."""
    try:
        importlib.import_module("pycuda.autoprimaryctx")
        return importlib.import_module("pycuda.driver")
    except ImportError as exc:
        raise MissingExtraError("pycuda", EXTRA_OF["pycuda"]) from exc


def primary_context() -> Any:
    """The pycuda Context that `pycuda.autoprimaryctx` retained (current in the thread that imported it)."""
    return importlib.import_module("pycuda.autoprimaryctx").context


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
        import_pycuda()
    except (MissingExtraError, Exception):  # pycuda raises its own errors when there is no GPU
        return False
    return True


def current_gpu(cuda: ModuleType) -> tuple[str, str]:
    """(name, 'major.minor') of the device whose context is current."""
    device = cuda.Context.get_device()
    major, minor = device.compute_capability()
    return str(device.name()), f"{major}.{minor}"


def dims(shape: trt.Dims) -> list[int]:
    """A TensorRT Dims as a list of ints (-1 for a dynamic dimension)."""
    return [int(shape[i]) for i in range(len(shape))]


@dataclass
class Binding:
    """One I/O tensor: its name, pinned host array and device allocation, both sized for max batch."""

    name: str
    host: np.ndarray
    device: Any  # pycuda.driver.DeviceAllocation


@dataclass
class FieldRun:
    """Whole-field inference: an execution context on the engine's field profile, buffers for its largest field."""

    context: trt.IExecutionContext
    bindings: dict[str, Binding]
    largest: tuple[int, int]  # (H, W) of the profile's max shape


FIELD_PROFILE = 1  # export/tensorrt/plan.py: profile 0 takes batches of tiles, profile 1 one whole field


class TensorRTBackend(Backend):
    """Runs a `model.<precision>.engine` built by `hep2edge build-engine` for this GPU."""

    name = "tensorrt"
    _cuda: ModuleType | None = None
    _engine: trt.ICudaEngine | None = None
    _context: trt.IExecutionContext | None = None
    _stream: Any = None
    _bindings: dict[str, Binding] | None = None
    _graph_exec: Any = None
    _field: FieldRun | None = None
    _cuda_context: Any = None  # pycuda.driver.Context: the device's primary context
    _runtime: trt.Runtime | None = None
    _logger: trt.ILogger | None = None
    _min_batch = 1
    _gpu = ("", "")

    # --- loading -----------------------------------------------------------------------------------------
    def _load(self) -> ModelContract:
        path = self.config.model
        if not path.is_file():
            raise ConfigError(f"{path}: no such engine file")
        if self.config.device == "cpu":
            raise ConfigError("the tensorrt backend runs on a GPU only; use `backend` onnxruntime for `device` cpu")
        sidecar = read_sidecar(path)
        trt_mod, cuda = import_tensorrt(), import_pycuda()
        self._cuda, self._cuda_context = cuda, primary_context()
        with self.on_this_thread():
            return self._load_engine(trt_mod, sidecar)

    def _load_engine(self, trt_mod: ModuleType, sidecar: EngineSidecar) -> ModelContract:
        """Check the sidecar against this GPU and TensorRT, deserialise, bind buffers (context current)."""
        assert self._cuda is not None
        path, cuda = self.config.model, self._cuda
        self._gpu = current_gpu(cuda)
        why = sidecar.mismatch(trt_mod.__version__, *self._gpu)
        if why:
            raise ContractError(f"{path}: stale engine ({why}); rebuild it here with `hep2edge build-engine`")
        self._engine = self._deserialize(path.read_bytes(), str(path))
        self._context = self._engine.create_execution_context()
        inputs, outputs = self._io_names()
        check_io(sidecar.contract, str(path), inputs, self._shape(inputs[0]), outputs,
                 {name: self._shape(name) for name in outputs})  # -1 (dynamic batch) passes as unknown
        self._min_batch, self._max_batch = self._batch_range(inputs[0])
        self._stream = cuda.Stream()
        contract = sidecar.contract
        tiles = (self._max_batch, contract.channels, contract.tile, contract.tile)
        self._bindings = self._allocate(self._context, inputs + outputs, tiles)
        if contract.whole_field and self._engine.num_optimization_profiles > FIELD_PROFILE:
            self._field = self._open_field_profile(inputs + outputs)
        return contract

    def _open_field_profile(self, names: list[str]) -> FieldRun:
        """A second context on the field profile, with buffers for the profile's largest field."""
        assert self._engine is not None
        context = self._engine.create_execution_context()
        if not context.set_optimization_profile_async(FIELD_PROFILE, self._stream.handle):
            raise ContractError(f"{self.config.model}: TensorRT refused the whole-field optimization profile")
        self._stream.synchronize()
        largest = tuple(dims(self._engine.get_tensor_profile_shape(names[0], FIELD_PROFILE)[2]))
        return FieldRun(context, self._allocate(context, names, largest), (largest[2], largest[3]))

    def _deserialize(self, plan: bytes, source: str) -> trt.ICudaEngine:
        import tensorrt as trt  # the real module: import_tensorrt() checked it in _load

        self._logger = trt.Logger(trt.Logger.WARNING)  # kept: the runtime logs through it for its whole life
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ContractError(f"{source}: TensorRT could not deserialize this engine; rebuild it on this machine")
        return engine

    def _io_names(self) -> tuple[list[str], list[str]]:
        import tensorrt as trt

        assert self._engine is not None
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        return inputs, [n for n in names if n not in inputs]

    def _shape(self, name: str) -> list[int]:
        assert self._engine is not None
        return dims(self._engine.get_tensor_shape(name))

    def _batch_range(self, input_name: str) -> tuple[int, int]:
        """(min, max) batch one enqueue runs: the profile's range, max capped by the configured max batch.

        A static engine runs its own N; a batch below the minimum is padded up to it (see `_enqueue`).
        """
        assert self._engine is not None
        static = self._shape(input_name)[0]
        if static > 0:
            return static, static
        profile_min, _, profile_max = self._engine.get_tensor_profile_shape(input_name, 0)
        low = dims(profile_min)[0]
        return low, max(low, min(self.config.max_batch, dims(profile_max)[0]))

    def _allocate(self, context: trt.IExecutionContext, names: list[str], largest: tuple[int, ...]
                  ) -> dict[str, Binding]:
        """Pinned host + device buffers of every I/O tensor at the input shape `largest`, bound to `context`."""
        import tensorrt as trt

        assert self._engine is not None and self._cuda is not None
        self._set_input_shape(names[0], largest, context)
        bindings: dict[str, Binding] = {}
        for name in names:
            shape = tuple(dims(context.get_tensor_shape(name)))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            host = self._cuda.pagelocked_empty(shape, dtype)
            device = self._cuda.mem_alloc(host.nbytes)
            if not context.set_tensor_address(name, int(device)):
                raise ContractError(f"{self.config.model}: TensorRT refused the address of tensor '{name}'")
            bindings[name] = Binding(name, host, device)
        return bindings

    # --- running -----------------------------------------------------------------------------------------
    @contextmanager
    def on_this_thread(self) -> Iterator[None]:
        """The backend's CUDA context current in the calling thread for the block (nested blocks are free)."""
        assert self._cuda is not None and self._cuda_context is not None
        current = self._cuda.Context.get_current()
        if current is not None and current == self._cuda_context:
            yield
            return
        self._cuda_context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def device_name(self) -> str:
        return f"{self._gpu[0]} (sm {self._gpu[1]})" if self._gpu[0] else "cuda"

    @property
    def input_binding(self) -> Binding:
        """The engine input buffer: CUDA preprocessing writes normalised tiles straight into `.device`."""
        assert self._bindings is not None
        return self._bindings[self.contract.input_name]

    @property
    def stream(self) -> Any:
        return self._stream

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._cuda is not None
        n = len(batch)
        binding = self.input_binding
        binding.host[:n] = batch.astype(binding.host.dtype, copy=False)
        with self.on_this_thread():
            self._cuda.memcpy_htod_async(binding.device, binding.host[:n], self._stream)
            return self.infer_on_device(n)

    def infer_on_device(self, n: int, copy: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Run on the first `n` tiles already in the input buffer; D2H of the outputs named in `copy` only
        (default: all of `tile_outputs`)."""
        assert self._context is not None and self._cuda is not None
        copy = self.tile_outputs if copy is None else copy
        with self.on_this_thread():
            self._enqueue(n)
            outputs = {}
            for name in copy:
                binding = self._output(name)
                self._cuda.memcpy_dtoh_async(binding.host[:n], binding.device, self._stream)
                outputs[name] = binding.host[:n]
            self._stream.synchronize()
        return {name: np.array(value, dtype=np.float32) for name, value in outputs.items()}

    def output_dtype(self, name: str) -> np.dtype:
        return self._output(name).host.dtype

    def output_device(self, name: str) -> Any:
        """Device allocation of an output (the GPU threshold reads the mask there)."""
        return self._output(name).device

    def _output(self, name: str) -> Binding:
        assert self._bindings is not None
        return self._bindings[name]

    def _set_input_shape(self, name: str, shape: tuple[int, ...], context: trt.IExecutionContext | None = None
                         ) -> None:
        context = context or self._context
        assert context is not None
        if not context.set_input_shape(name, shape):
            raise ContractError(f"{self.config.model}: TensorRT refused input shape {shape} for '{name}' (outside "
                                "the engine's optimization profile); rebuild it with a wider --batch / --field-size")

    @property
    def largest_field(self) -> tuple[int, int] | None:
        """The field profile's largest (H, W); (0, 0) when the engine was built without one."""
        return self._field.largest if self._field is not None else (0, 0)

    def _field_run(self) -> FieldRun:
        if self._field is None:
            raise ConfigError(f"`inference` field: {self.config.model} has no whole-field profile; rebuild it "
                              "with `hep2edge build-engine --field-size HxW`")
        return self._field

    def field_binding(self, name: str) -> Binding:
        """A tensor of the field profile's context: CUDA preprocessing writes the field into the input's
        `.device`, the GPU threshold reads the mask there."""
        return self._field_run().bindings[name]

    def _infer_field(self, field: np.ndarray) -> dict[str, np.ndarray]:
        """One whole field through the field profile's context: H2D, execute, D2H of mask and maps."""
        assert self._cuda is not None
        binding = self.field_binding(self.contract.input_name)
        with self.on_this_thread():
            staged = _view(binding.host, tuple(field.shape))
            staged[...] = field
            self._cuda.memcpy_htod_async(binding.device, staged, self._stream)
            return self.infer_field_on_device(tuple(field.shape), self.field_outputs)

    def infer_field_on_device(self, shape: tuple[int, ...], copy: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run the field profile on the (1, C, Hp, Wp) input already in its buffer; D2H of the outputs in `copy`."""
        assert self._cuda is not None
        run = self._field_run()
        with self.on_this_thread():
            self._set_input_shape(self.contract.input_name, shape, run.context)
            if not run.context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f"{self.config.model}: TensorRT execute_async_v3 failed for a field {shape}")
            outputs = {}
            for output in copy:
                binding = run.bindings[output]
                outputs[output] = _view(binding.host, tuple(dims(run.context.get_tensor_shape(output))))
                self._cuda.memcpy_dtoh_async(outputs[output], binding.device, self._stream)
            self._stream.synchronize()
        return {output: np.array(value, dtype=np.float32) for output, value in outputs.items()}

    def _enqueue(self, n: int) -> None:
        """Run `n` tiles; below the profile minimum the rows after `n` (stale, independent) are run too."""
        assert self._context is not None
        rows = max(n, self._min_batch)
        shape = (rows, self.contract.channels, self.contract.tile, self.contract.tile)
        if rows == self._max_batch and self.config.cuda_graph:
            self._launch_graph(shape)
            return
        self._set_input_shape(self.contract.input_name, shape)
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"{self.config.model}: TensorRT execute_async_v3 failed for a batch of {rows}")

    def _launch_graph(self, shape: tuple[int, int, int, int]) -> None:
        """Capture the full-batch execution once into a CUDA graph, then replay it."""
        from hep2edge.runtime.backends import cuda_graph

        assert self._context is not None
        if self._graph_exec is None:
            self._set_input_shape(self.contract.input_name, shape)
            if not self._context.execute_async_v3(self._stream.handle):  # flush deferred updates before capture
                raise RuntimeError(f"{self.config.model}: TensorRT execute_async_v3 failed before graph capture")
            self._stream.synchronize()
            self._graph_exec = cuda_graph.capture(
                self._stream.handle, lambda: self._context.execute_async_v3(self._stream.handle)  # type: ignore[union-attr]
            )
        cuda_graph.launch(self._graph_exec, self._stream.handle)

    def _release(self) -> None:
        if self._cuda_context is None:
            return
        with self.on_this_thread():
            self._free()

    def _free(self) -> None:
        if self._graph_exec is not None:
            from hep2edge.runtime.backends import cuda_graph

            cuda_graph.destroy(self._graph_exec)
        for binding in [*(self._bindings or {}).values(), *(self._field.bindings.values() if self._field else ())]:
            binding.device.free()
        self._bindings = None
        self._field = None
        self._graph_exec = None
        self._context = None  # context before engine before runtime, as TensorRT requires
        self._engine = None
        self._runtime = None
        self._stream = None


def _view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first prod(shape) elements of a contiguous (pinned) buffer, as an array of `shape`."""
    return buffer.reshape(-1)[: int(np.prod(shape))].reshape(shape)
