"""Camera frames through OpenCV VideoCapture (a device index, a stream URL or a video file), sampled at `fps`.

A capture thread keeps at most `buffer` sampled frames; when the pipeline falls behind the oldest waiting
frame is dropped (and counted), so the analysis always works on recent frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from hep2edge.errors import ConfigError
from hep2edge.runtime.sources.base import Emit, Item, Source


@dataclass(frozen=True)
class CameraConfig:
    source: str
    fps: float = 2.0
    buffer: int = 2
    max_frames: int = 0  # 0 = until the stream ends or the run is stopped

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ConfigError(f"`fps` must be positive, got {self.fps}")
        if self.buffer < 1:
            raise ConfigError(f"`buffer` must be at least 1, got {self.buffer}")


def open_capture(source: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        raise ConfigError(f"{source}: OpenCV cannot open this camera, stream or video file")
    return capture


class CameraSource(Source):
    """`hep2edge camera SOURCE`: frames sampled at `fps` (stream time for files, wall time for live sources)."""

    name = "camera"
    finite = False

    def __init__(self, config: CameraConfig) -> None:
        super().__init__()
        self.config = config
        self.sampled = 0
        self._capture = open_capture(config.source)
        self._is_file = self._capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0
        self._frames: deque[tuple[int, np.ndarray]] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._halt = threading.Event()

    def describe(self) -> str:
        kind = "video file" if self._is_file else "camera/stream"
        return f"{kind} {self.config.source} at {self.config.fps:g} fps (drop oldest when behind)"

    def _keep(self, index: int, frame: np.ndarray) -> None:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 and frame.shape[2] == 3 else frame
        with self._cond:
            if len(self._frames) >= self.config.buffer:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append((index, rgb))
            self.sampled += 1
            self._cond.notify()

    def _capture_loop(self, stop: threading.Event) -> None:
        period = 1.0 / self.config.fps
        next_time = 0.0
        start = time.monotonic()
        index = 0
        try:
            while not (stop.is_set() or self._halt.is_set()):
                ok, frame = self._capture.read()
                if not ok:
                    break
                now = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000 if self._is_file else time.monotonic() - start
                if now + 1e-9 >= next_time:
                    self._keep(index, frame)
                    next_time += period
                    if self.config.max_frames and self.sampled >= self.config.max_frames:
                        break
                index += 1
        finally:
            self._capture.release()
            with self._cond:
                self._ended = True
                self._cond.notify()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        reader = threading.Thread(target=self._capture_loop, args=(stop,), name="camera-capture", daemon=True)
        reader.start()
        while True:
            with self._cond:
                while not self._frames and not self._ended and not stop.is_set():
                    self._cond.wait(0.1)
                if not self._frames:
                    break
                index, frame = self._frames.popleft()
            if not emit(Item(key=f"{self.config.source}#{index}", name=f"frame_{index:06d}", frame=frame)):
                break
        self._halt.set()
        reader.join(timeout=5)
