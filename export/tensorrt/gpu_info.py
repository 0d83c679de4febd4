"""Name and compute capability of the GPU an engine is built on, for its sidecar.

Tried in order: cuda.bindings (cuda-python), pycuda, `nvidia-smi`. None needs torch.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    source: str


def _from_cuda_bindings(device: int) -> GpuInfo | None:
    from cuda.bindings import runtime as cudart

    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return None
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.strip("\x00 "), f"{props.major}.{props.minor}", "cuda.bindings")


def _from_pycuda(device: int) -> GpuInfo | None:
    import pycuda.driver as cuda

    cuda.init()
    gpu = cuda.Device(device)
    major, minor = gpu.compute_capability()
    return GpuInfo(str(gpu.name()), f"{major}.{minor}", "pycuda")


def parse_nvidia_smi(text: str, device: int) -> GpuInfo | None:
    """One 'name, compute_cap' CSV line per GPU -> the `device`-th."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if device >= len(lines) or "," not in lines[device]:
        return None
    name, cap = (part.strip() for part in lines[device].rsplit(",", 1))
    return GpuInfo(name, cap, "nvidia-smi")


def _from_nvidia_smi(device: int) -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    result = subprocess.run(
        [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20, check=False,
    )
    return parse_nvidia_smi(result.stdout, device) if result.returncode == 0 else None


PROBES: tuple[Callable[[int], GpuInfo | None], ...] = (_from_cuda_bindings, _from_pycuda, _from_nvidia_smi)


def gpu_info(device: int = 0) -> GpuInfo:
    """The first probe that answers; GpuInfo('unknown', 'unknown', 'none') if none does."""
    for probe in PROBES:
        try:
            info = probe(device)
        except Exception:  # a missing module or driver just means: try the next probe
            continue
        if info is not None:
            return info
    return GpuInfo("unknown", "unknown", "none")
