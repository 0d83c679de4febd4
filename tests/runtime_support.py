"""Helpers for the runtime end-to-end tests (no tests here): small images, the CLI in a subprocess, RESULTS checks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

TILE = 64  # the tiny test model's tile (conftest.TINY_TILE)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HEP2EDGE_ORT_THREADS": "1", "COLUMNS": "200"}


def write_pngs(folder: Path, count: int, shape: tuple[int, int] = (40, 48), seed: int = 0,
               prefix: str = "img") -> list[Path]:
    """`count` distinct random uint8 PNGs (distinct content, so no two are aliases)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.png"
        path.write_bytes(cv2.imencode(".png", rng.integers(0, 256, shape, dtype=np.uint8))[1].tobytes())
        paths.append(path)
    return paths


def random_batch(n: int, seed: int = 0, tile: int = TILE) -> npt.NDArray[np.float32]:
    """`n` random (1, tile, tile) float32 tiles in [0, 1), reproducible from `seed`: a backend input batch."""
    return np.random.default_rng(seed).random((n, 1, tile, tile), dtype=np.float32)


def hep2edge(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hep2edge", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hep2edge", *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture(name="spawn")
def spawn_fixture() -> Iterator[Spawn]:
    """`spawn(*args, cwd=...)` starts the CLI in the background; whatever still runs at teardown is killed."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, cwd: Path) -> subprocess.Popen[str]:
        started.append(start(*args, cwd=cwd))
        return started[-1]

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def wait_for(condition: Callable[[], bool], timeout: float, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process exited early ({process.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            if process is not None:  # never leave a background process behind a failed test
                process.kill()
                process.communicate()
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[str, str]:
    process.send_signal(sig)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def results_count(out: Path) -> int:
    return len([p for p in out.glob("*.json") if not p.name.startswith(".")])


def db_rows(out: Path, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(out / "results.db")
    try:
        return list(db.execute(sql, parameters))
    finally:
        db.close()


def check_exactly_once(out: Path, inputs: list[Path], failed: int = 0) -> None:
    """Every input: one JSON + one mask with its content hash; one db row each; no temporary file visible.

    `failed`: how many other inputs (with no result) the journal holds as failed.
    """
    stems = sorted(p.stem for p in inputs)
    assert sorted(p.stem for p in out.glob("*.json")) == stems
    assert sorted(p.name[: -len("_mask.png")] for p in out.glob("*_mask.png")) == stems
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    for path in inputs:
        result = json.loads((out / f"{path.stem}.json").read_text())
        assert result["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert db_rows(out, "SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM results") == [(len(inputs), len(inputs))]
    states = dict(db_rows(out, "SELECT state, COUNT(*) FROM inputs GROUP BY state"))
    assert states == {"done": len(inputs), **({"failed": failed} if failed else {})}
    done_twice = db_rows(out, "SELECT content_hash FROM events WHERE event = 'done' "
                              "GROUP BY content_hash HAVING COUNT(*) > 1")
    assert done_twice == []
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == len(inputs) + 1
