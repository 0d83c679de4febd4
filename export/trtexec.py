"""The `trtexec` command line equivalent to `hep2edge build-engine`, for machines without the Python API."""

from __future__ import annotations

import math
import shlex

from hep2edge.export.engine_plan import EnginePlan


def _shape(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims)


def trtexec_command(plan: EnginePlan) -> str:
    """Strongly typed build with the same profile, workspace (MiB) and timing cache as the Python path."""
    profile = next(iter(plan.profile().items()))
    name, shapes = profile
    args = [
        "trtexec",
        f"--onnx={plan.onnx_path.name}",
        "--stronglyTyped",
        f"--minShapes={name}:{_shape(shapes['min'])}",
        f"--optShapes={name}:{_shape(shapes['opt'])}",
        f"--maxShapes={name}:{_shape(shapes['max'])}",
        f"--memPoolSize=workspace:{math.ceil(plan.workspace_gib * 1024)}",
        f"--timingCacheFile={plan.timing_cache_path.name}",
        f"--saveEngine={plan.engine_path.name}",
    ]
    return " ".join(shlex.quote(a) for a in args)
