"""The `trtexec` command line equivalent to `hep2edge build-engine`, for machines without the Python API."""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path

from hep2edge.export.tensorrt.plan import EnginePlan


def _shape(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims)


def _from_onnx_folder(plan: EnginePlan, path: Path) -> str:
    """`path` as seen from the ONNX file's folder, where the command is run (a bare name when it is there)."""
    return os.path.relpath(path, plan.onnx_path.parent)


def trtexec_command(plan: EnginePlan) -> str:
    """Strongly typed build with the same profile, workspace (MiB) and timing cache as the Python path.

    Run in the ONNX file's folder; engine and timing cache paths are relative to it, so `--out` elsewhere
    is honoured.
    """
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
        f"--timingCacheFile={_from_onnx_folder(plan, plan.timing_cache_path)}",
        f"--saveEngine={_from_onnx_folder(plan, plan.engine_path)}",
    ]
    return " ".join(shlex.quote(a) for a in args)
