"""Sources: file lists, the folder watcher (settling, filters, renames, symlinks, polling), the camera."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from hep2edge.errors import ConfigError
from hep2edge.runtime.sources import Item, is_candidate
from hep2edge.runtime.sources.camera import CameraConfig, CameraSource
from hep2edge.runtime.sources.files import expand_inputs
from hep2edge.runtime.sources.watch import FolderWatchSource, WatchConfig


def _png(path: Path, value: int = 7, shape: tuple[int, int] = (20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", np.full(shape, value, np.uint8))[1].tobytes())
    return path


def test_candidates_skip_hidden_temporary_and_other_files(tmp_path: Path) -> None:
    assert is_candidate(tmp_path / "a.TIF", tmp_path)
    for name in (".a.png", "a.png.part", "a.png.tmp", "~$a.png", "a.txt", "sub/.cache/a.png", "00001_p1_Mask.tif"):
        assert not is_candidate(tmp_path / name, tmp_path), name


def test_expand_inputs(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "d" / "a.png"), _png(tmp_path / "d" / "sub" / "b.tif")
    (tmp_path / "d" / "readme.txt").write_text("x")
    assert expand_inputs([str(tmp_path / "d")]) == [a.absolute()]
    assert expand_inputs([str(tmp_path / "d")], recursive=True) == [a.absolute(), b.absolute()]
    assert expand_inputs([str(tmp_path / "d" / "*.png"), str(a)]) == [a.absolute()]
    assert expand_inputs([str(tmp_path / "missing.png")]) == [(tmp_path / "missing.png").absolute()]
    with pytest.raises(ConfigError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.jpeg")])


class _Collector:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.times: dict[str, float] = {}

    def __call__(self, item: Item) -> bool:
        self.items.append(item)
        self.times[item.name] = time.monotonic()
        return True

    def names(self) -> list[str]:
        return sorted(i.name for i in self.items)


def _watch(config: WatchConfig, act: Callable[[], object], wait_s: float = 1.5,
           first: list[Path] | None = None) -> _Collector:
    source, collected, stop = FolderWatchSource(config, first), _Collector(), threading.Event()
    thread = threading.Thread(target=source.run, args=(collected, stop))
    thread.start()
    time.sleep(0.3)  # let the observer start
    try:
        act()
        time.sleep(wait_s)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    return collected


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_watch_emits_complete_images_only(tmp_path: Path, poll: bool) -> None:
    folder, outside = tmp_path / "scan", _png(tmp_path / "outside.png")
    folder.mkdir()
    config = WatchConfig(folder, recursive=False, poll=poll, poll_interval_s=0.1, settle_ms=300)

    def act() -> None:
        _png(folder / "a.png")
        _png(folder / ".hidden.png")
        _png(folder / "b.png.part")
        (folder / "notes.txt").write_text("x")
        os.symlink(outside, folder / "link.png")
        _png(folder / "sub" / "deep.png")
        os.rename(folder / "b.png.part", folder / "b.png")

    got = _watch(config, act)
    assert got.names() == ["a", "b"]
    assert all(str(i.path).startswith(str(folder.resolve())) for i in got.items)


def test_watch_waits_for_a_growing_file_to_settle(tmp_path: Path) -> None:
    config = WatchConfig(tmp_path, settle_ms=400)
    started: dict[str, float] = {}

    def act() -> None:
        data = cv2.imencode(".png", np.zeros((50, 50), np.uint8))[1].tobytes()
        started["t"] = time.monotonic()
        with open(tmp_path / "slow.png", "wb") as handle:
            for i in range(0, len(data), 40):
                handle.write(data[i:i + 40])
                handle.flush()
                time.sleep(0.02)
        started["done"] = time.monotonic()

    got = _watch(config, act, wait_s=1.0)
    assert got.names() == ["slow"]
    assert got.times["slow"] - started["done"] >= 0.35  # not before the file stopped changing for --settle


def test_watch_emits_a_renamed_file_at_once_not_at_the_next_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion rename wakes the watcher: no wait for the settle tick (here made 5 s long)."""
    monkeypatch.setattr(FolderWatchSource, "MAX_TICK_S", 5.0)
    config = WatchConfig(tmp_path, settle_ms=60000)
    moved: dict[str, float] = {}

    def act() -> None:
        _png(tmp_path / ".a.png.part")
        time.sleep(0.2)
        moved["t"] = time.monotonic()
        os.rename(tmp_path / ".a.png.part", tmp_path / "a.png")

    source, collected, stop = FolderWatchSource(config), _Collector(), threading.Event()
    thread = threading.Thread(target=source.run, args=(collected, stop))
    thread.start()
    time.sleep(0.3)
    act()
    for _ in range(100):
        if collected.items:
            break
        time.sleep(0.02)
    stop.set()
    source._pending.wake.set()  # end the 5 s wait so the thread can see the stop
    thread.join(timeout=10)
    assert collected.names() == ["a"]
    assert collected.times["a"] - moved["t"] < 2.5


def test_watch_recursive_existing_and_restart_queue(tmp_path: Path) -> None:
    old, deep = _png(tmp_path / "old.png"), _png(tmp_path / "sub" / "deep.png")
    config = WatchConfig(tmp_path, recursive=True, settle_ms=100, existing=True)
    got = _watch(config, lambda: _png(tmp_path / "sub" / "new.png"), wait_s=1.0, first=[old])
    assert got.names().count("old") == 1  # re-queued first; the start-up scan does not queue it again
    assert {"deep", "new"} <= set(got.names())
    assert deep.exists()


def test_watch_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        WatchConfig(tmp_path / "nope")
    with pytest.raises(ConfigError, match="`max_files`"):
        WatchConfig(tmp_path, max_files=-1)


def test_watch_ends_by_itself_after_max_files(tmp_path: Path) -> None:
    """--max-files N: the source returns after the N-th file (the pipeline then drains and exits)."""
    for name in ("a", "b", "c"):
        _png(tmp_path / f"{name}.png")
    source = FolderWatchSource(WatchConfig(tmp_path, settle_ms=50, existing=True, max_files=2))
    assert source.finite and "until 2 file(s)" in source.describe()
    collected, stop = _Collector(), threading.Event()
    thread = threading.Thread(target=source.run, args=(collected, stop))
    thread.start()
    thread.join(timeout=10)
    alive = thread.is_alive()
    stop.set()
    assert not alive, "the watcher did not end after --max-files"
    assert collected.names() == ["a", "b"]


def _video(path: Path, frames: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 1] = i * 8
        writer.write(frame)
    writer.release()
    return path


def test_camera_samples_at_fps_and_counts_drops(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.avi", frames=30, fps=30)
    source = CameraSource(CameraConfig(str(video), fps=10, buffer=1))
    received: list[Item] = []

    def slow_emit(item: Item) -> bool:
        received.append(item)
        time.sleep(0.05)  # a pipeline slower than the capture
        return True

    source.run(slow_emit, threading.Event())
    assert 9 <= source.sampled <= 11  # 1 s of video at 10 fps
    assert source.dropped > 0 and len(received) + source.dropped == source.sampled
    assert received[0].frame is not None and received[0].frame.shape == (48, 64, 3)
    assert received[0].name.startswith("frame_")


def test_camera_that_cannot_open_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open"):
        CameraSource(CameraConfig(str(tmp_path / "none.avi")))
