"""GPU-side timing of short kernels with pycuda events, free of Python launch overhead.

A spin kernel first keeps the stream busy for tens of milliseconds while Python enqueues every timed launch,
so the launches run back to back on the GPU; the events bracket only them. pycuda is imported on use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


class EventTimer:
    """`EventTimer(stream).per_call_ms(launch, repeats)`: mean GPU time of one `launch()` over `repeats`."""

    def __init__(self, stream: Any, spin_ms: float = 40.0) -> None:
        import pycuda.driver as cuda
        from pycuda.compiler import SourceModule

        self.cuda, self.stream = cuda, stream
        self._spin = SourceModule(SPIN, no_extern_c=True).get_function("spin")
        clock_khz = cuda.Context.get_device().get_attribute(cuda.device_attribute.CLOCK_RATE)
        self._cycles = int(clock_khz * spin_ms)

    def per_call_ms(self, launch: Callable[[], None], repeats: int, warmup: int = 5) -> float:
        for _ in range(warmup):
            launch()
        start, end = self.cuda.Event(), self.cuda.Event()
        self._spin(self._spin_arg(), block=(1, 1, 1), grid=(1, 1), stream=self.stream)
        start.record(self.stream)
        for _ in range(repeats):
            launch()
        end.record(self.stream)
        end.synchronize()
        return float(start.time_till(end)) / repeats

    def _spin_arg(self) -> Any:
        import numpy as np

        return np.int64(self._cycles)
