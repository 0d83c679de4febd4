"""Issue 11 end to end through the CLI: nothing lost across restarts (whatever the files' mtimes, even in a crash
loop), one row per rewritten path, FIFOs that neither stall the watcher nor its stop, tables current when idle."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_support import (  # noqa: F401 - spawn_fixture provides `spawn`
    Spawn,
    db_rows,
    hep2edge,
    spawn_fixture,
    stop,
    wait_for,
    write_pngs,
)

HOURS_AGO = time.time() - 5 * 3600


def _watch(spawn: Spawn, folder: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen[str]:
    process = spawn("watch", str(folder), "--model", str(model), "--out", str(out), "--settle", "150", *extra,
                    cwd=folder.parent)
    return process


def _watching(spawn: Spawn, tmp_path: Path, model: Path) -> tuple[Path, Path, subprocess.Popen[str]]:
    """(scan folder, RESULTS, process) of a watcher started on an empty folder, once its journal is open."""
    folder, out = tmp_path / "scan", tmp_path / "results"
    folder.mkdir()
    process = _watch(spawn, folder, out, model)
    wait_for(lambda: _runs(out) > 0, 60, process)
    return folder, out, process


def _runs(out: Path) -> int:
    """Runs the journal has recorded (0 while it is not created yet)."""
    try:
        return int(db_rows(out, "SELECT COUNT(*) FROM runs")[0][0])
    except sqlite3.Error:
        return 0


def _done(out: Path) -> set[str]:
    return {Path(r[0]).name for r in db_rows(out, "SELECT source_path FROM results")}


def _csv_paths(out: Path) -> list[str]:
    with open(out / "results.csv", newline="") as handle:
        return [Path(row["source_path"]).name for row in csv.DictReader(handle)]


def _arrive_old(staging: Path, folder: Path) -> list[str]:
    """Files moved in with mtimes hours old (`cp -p`, `rsync -t`, an unzipped archive)."""
    names = []
    for path in staging.iterdir():
        os.utime(path, (HOURS_AGO, HOURS_AGO))
        path.rename(folder / path.name)
        names.append(path.name)
    return sorted(names)


@pytest.mark.slow
def test_files_that_arrive_while_down_are_analysed_whatever_their_mtime(tiny_onnx: Path, tmp_path: Path,
                                                                        spawn: Spawn) -> None:
    folder, out = tmp_path / "scan", tmp_path / "results"
    (before,) = write_pngs(folder, 1, prefix="before")  # there before the first watch: its baseline
    process = _watch(spawn, folder, out, tiny_onnx)
    wait_for(lambda: _runs(out) > 0, 60, process)
    (live,) = write_pngs(folder, 1, seed=1, prefix="live")
    wait_for(lambda: _done(out) == {live.name}, 60, process)
    stop(process)

    old = _arrive_old(Path(write_pngs(tmp_path / "staging", 2, seed=2, prefix="old")[0]).parent, folder)
    process = _watch(spawn, folder, out, tiny_onnx)  # a restart, without --existing, as the service unit runs it
    wait_for(lambda: _done(out) == {live.name, *old}, 60, process)
    wait_for(lambda: sorted(_csv_paths(out)) == sorted([live.name, *old]), 10, process)
    _, err = stop(process)
    assert process.returncode == 0, err
    assert db_rows(out, "SELECT state FROM inputs WHERE path = ?", (str(before),)) == [("ignored",)]


@pytest.mark.slow
def test_a_restart_killed_before_its_scan_settles_loses_nothing(tiny_onnx: Path, tmp_path: Path,
                                                                spawn: Spawn) -> None:
    folder, out, process = _watching(spawn, tmp_path, tiny_onnx)
    stop(process)
    old = _arrive_old(Path(write_pngs(tmp_path / "staging", 2, seed=3, prefix="old")[0]).parent, folder)
    (fresh,) = write_pngs(folder, 1, seed=4, prefix="fresh")
    runs = _runs(out)
    process = spawn("watch", str(folder), "--model", str(tiny_onnx), "--out", str(out), "--settle", "20000",
                    cwd=tmp_path)  # its start-up scan waits 20 s for the files to settle: killed before that
    wait_for(lambda: _runs(out) > runs, 60, process)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert _done(out) == set()
    process = _watch(spawn, folder, out, tiny_onnx)
    wait_for(lambda: _done(out) == {fresh.name, *old}, 60, process)
    stop(process)


@pytest.mark.slow
def test_a_file_rewritten_in_place_has_one_result(tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    folder, out, process = _watching(spawn, tmp_path, tiny_onnx)
    rng = np.random.default_rng(5)
    for k in range(4):  # one specimen of four fields; the scanner writes p0 as zeros first
        pixels = np.zeros((90, 120), np.uint8) if k == 0 else rng.integers(0, 256, (90, 120), dtype=np.uint8)
        cv2.imwrite(str(folder / f"00007_p{k}.tif"), pixels)
    wait_for(lambda: len(_done(out)) == 4, 60, process)
    time.sleep(1.0)
    with open(folder / "00007_p0.tif", "r+b") as handle:  # overwritten in place, same path
        handle.write(cv2.imencode(".tif", rng.integers(0, 256, (90, 120), dtype=np.uint8))[1].tobytes())
    wait_for(lambda: db_rows(out, "SELECT COUNT(*) FROM superseded")[0][0] == 1, 60, process)
    wait_for(lambda: len(_csv_paths(out)) == 4, 10, process)
    _, err = stop(process)
    assert process.returncode == 0, err
    assert sorted(_csv_paths(out)) == [f"00007_p{k}.tif" for k in range(4)]
    assert db_rows(out, "SELECT images, complete FROM specimens") == [(4, 1)]
    stems = sorted(p.stem for p in out.glob("*.json"))
    assert stems == [f"00007_p{k}" for k in range(4)]  # the rewrite replaced its files, no second set


@pytest.mark.slow
def test_fifos_stall_neither_the_watcher_nor_its_stop(tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    folder, out, process = _watching(spawn, tmp_path, tiny_onnx)
    os.mkfifo(folder / "pipe1.tif")
    os.mkfifo(folder / "pipe2.tif")
    (image,) = write_pngs(folder, 1, seed=6)
    wait_for(lambda: _done(out) == {image.name}, 60, process)
    started = time.monotonic()
    _, err = stop(process, timeout=15)
    assert process.returncode == 0 and time.monotonic() - started < 15, err
    assert "FIFO" in err


@pytest.mark.slow
def test_analyze_refuses_a_fifo_in_one_line(tiny_onnx: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    result = hep2edge("analyze", str(fifo), "--model", str(tiny_onnx), "--out", str(tmp_path / "r"), cwd=tmp_path,
                      timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{fifo}: is a FIFO (named pipe), not an image file" in result.stderr


@pytest.mark.slow
def test_tables_are_current_soon_after_a_burst_while_idle(tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    folder, out, process = _watching(spawn, tmp_path, tiny_onnx)
    burst = write_pngs(tmp_path / "staging", 5, seed=8)
    for path in burst:
        path.rename(folder / path.name)
    wait_for(lambda: len(_done(out)) == 5, 60, process)
    last = time.monotonic()
    wait_for(lambda: len(_csv_paths(out)) == 5, 5, process)
    assert time.monotonic() - last < 5
    stop(process)


def test_non_ascii_names_keep_readable_stems(tiny_onnx: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for index, name in enumerate(("über ä", "日本 語")):
        write_pngs(folder, 1, seed=index, prefix=name)[0].rename(folder / f"{name}.png")
    result = hep2edge("analyze", str(folder), "--model", str(tiny_onnx), "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in (tmp_path / "r").glob("*.json")) == ["über_ä", "日本_語"]
