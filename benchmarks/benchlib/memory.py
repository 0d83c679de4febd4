"""Peak memory of a measured block: host (this process's resident set) and device (GPU).

Host: Linux keeps the peak resident set (VmHWM) and resets it when 5 is written to /proc/self/clear_refs,
so each block gets its own peak. Device: the torch allocator's peak for the torch backend, otherwise the
whole GPU's used memory sampled through NVML (nvidia-ml-py) every few milliseconds.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

MB = 1 << 20
STATUS = Path("/proc/self/status")


def _status_kb(key: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class HostPeak:
    """`with HostPeak() as peak: ...` then `peak.result()`: peak and starting resident memory in MiB."""

    def __enter__(self) -> HostPeak:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after reset"
        except OSError:
            self.method = "VmHWM since process start (reset not permitted)"
        self.start_kb = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kb = _status_kb("VmHWM")

    def result(self) -> dict[str, Any]:
        if self.peak_kb is None or self.start_kb is None:
            return {"host_peak_mb": None, "host_start_mb": None, "host_method": "no /proc/self/status"}
        return {"host_peak_mb": self.peak_kb / 1024, "host_start_mb": self.start_kb / 1024,
                "host_method": self.method}


def _nvml() -> ModuleType | None:
    try:
        module = importlib.import_module("pynvml")
        module.nvmlInit()
        return module
    except Exception:  # not installed, or no driver: device memory is then not measured
        return None


class DevicePeak:
    """Peak GPU memory over a block: torch's allocator (reserved) for torch, else NVML sampling."""

    def __init__(self, use_torch: bool, device_index: int = 0, interval_s: float = 0.005) -> None:
        self.use_torch, self.index, self.interval_s = use_torch, device_index, interval_s
        self.peak: float | None = None
        self.start: float | None = None
        self.method = "not measured: no GPU"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DevicePeak:
        if self.use_torch:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_reserved() / MB
            self.method = "torch allocator, peak reserved"
            return self
        nvml = _nvml()
        if nvml is None:
            self.method = "not measured: pynvml (nvidia-ml-py) not available"
            return self
        handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        self.start = self.peak = nvml.nvmlDeviceGetMemoryInfo(handle).used / MB
        self.method = "NVML, whole GPU used memory, sampled"
        self._thread = threading.Thread(target=self._sample, args=(nvml, handle), daemon=True)
        self._thread.start()
        return self

    def _sample(self, nvml: Any, handle: Any) -> None:
        while not self._stop.wait(self.interval_s):
            used = nvml.nvmlDeviceGetMemoryInfo(handle).used / MB
            self.peak = max(self.peak or 0.0, used)

    def __exit__(self, *exc: object) -> None:
        if self.use_torch:
            import torch

            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_reserved() / MB
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    def result(self) -> dict[str, Any]:
        return {"device_peak_mb": self.peak, "device_start_mb": self.start, "device_method": self.method}


class NoDevice:
    """Stands in for DevicePeak on a CPU cell."""

    def __enter__(self) -> NoDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def result(self) -> dict[str, Any]:
        return {"device_peak_mb": None, "device_start_mb": None, "device_method": "cpu cell"}
