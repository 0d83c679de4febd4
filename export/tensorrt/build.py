"""Build a strongly typed TensorRT engine from a precision-carrying ONNX file (TensorRT 10.x and 11.x).

Precision lives in the graph (AutoCast fp16, Q/DQ int8), so no precision builder flag is set. The plan
file is written as plain bytes (trtexec and Polygraphy load it as is) with a JSON sidecar beside it.
Typed against `tensorrt-stubs` (10.13 API): see tests/test_tensorrt_typing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hep2edge.atomic import atomic_write_bytes, atomic_write_json
from hep2edge.errors import Hep2EdgeError, MissingExtraError
from hep2edge.export.tensorrt.gpu_info import gpu_info
from hep2edge.export.tensorrt.plan import EnginePlan, sidecar_content
from hep2edge.export.tensorrt.probe import real_tensorrt
from hep2edge.extras import EXTRA_OF
from hep2edge.progress import SILENT

if TYPE_CHECKING:
    import tensorrt as trt


class EngineBuildError(Hep2EdgeError):
    """TensorRT could not parse or build the network; the message names the ONNX file."""


@dataclass(frozen=True)
class BuiltEngine:
    engine_path: Path
    sidecar_path: Path
    timing_cache_path: Path
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    timing_cache_reused: bool


def network_flags(trt_module: object) -> int:
    """Creation flags: STRONGLY_TYPED on 10.x (accepted and ignored on 11.x, where it is the default)."""
    flag_enum = getattr(trt_module, "NetworkDefinitionCreationFlag", None)
    strongly_typed = getattr(flag_enum, "STRONGLY_TYPED", None)
    return 0 if strongly_typed is None else 1 << int(strongly_typed)


def _parse(network: trt.INetworkDefinition, logger: trt.ILogger, path: Path) -> trt.OnnxParser:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        detail = errors[0].splitlines()[0] if errors else "no detail"
        raise EngineBuildError(f"{path}: TensorRT cannot parse it ({detail})")
    return parser


def _profile(builder: trt.Builder, shapes_by_input: dict[str, dict[str, list[int]]]) -> trt.IOptimizationProfile:
    import tensorrt as trt

    profile = builder.create_optimization_profile()
    for name, shapes in shapes_by_input.items():
        profile.set_shape(name, trt.Dims(shapes["min"]), trt.Dims(shapes["opt"]), trt.Dims(shapes["max"]))
    return profile


def _timing_cache(config: trt.IBuilderConfig, path: Path) -> tuple[trt.ITimingCache, bool]:
    """A timing cache seeded from `path` when it exists, parses and matches this device, else an empty one."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data) if data else None
    except Exception:  # a cache from another TensorRT version is only a slower build
        cache = None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, True
    fresh = config.create_timing_cache(b"")
    config.set_timing_cache(fresh, ignore_mismatch=True)
    return fresh, False


def build_engine(plan: EnginePlan, say: Callable[[str], None] = SILENT.say) -> BuiltEngine:
    """Parse, build, and write engine + timing cache + sidecar (sidecar first, engine renamed in last)."""
    if real_tensorrt() is None:
        raise MissingExtraError("tensorrt", EXTRA_OF["tensorrt"])
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    # the parser owns the weights the network points to: it must live until the build is done
    parser = _parse(network, logger, plan.onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for shapes in plan.profiles():  # 0: batches of tiles; 1 (whole-field models): one field
        config.add_optimization_profile(_profile(builder, shapes))
    # TensorRT: "The cache must not be destroyed until after the engine is built" (nor the parser, see above)
    cache, reused = _timing_cache(config, plan.timing_cache_path)
    say(f"building {plan.engine_path.name} from {plan.onnx_path.name} (TensorRT {trt.__version__})")
    serialized = builder.build_serialized_network(network, config)
    del parser, cache
    if serialized is None:
        raise EngineBuildError(f"{plan.onnx_path}: TensorRT failed to build an engine (see its log above)")
    atomic_write_bytes(plan.timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    gpu = gpu_info()
    atomic_write_json(plan.sidecar_path, sidecar_content(plan, trt.__version__, gpu.name, gpu.compute_capability))
    atomic_write_bytes(plan.engine_path, bytes(memoryview(serialized)))
    return BuiltEngine(plan.engine_path, plan.sidecar_path, plan.timing_cache_path, trt.__version__,
                       gpu.name, gpu.compute_capability, reused)
