"""Exactly once, whatever happens: SIGKILL mid-stream and restart, a storm of small files, SIGTERM mid-run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_support import (  # noqa: F401 - spawn_fixture provides `spawn`
    Spawn,
    check_exactly_once,
    db_rows,
    hep2edge,
    results_count,
    spawn_fixture,
    stop,
    wait_for,
    write_pngs,
)


def _done_before_restart(out: Path) -> set[str]:
    return {str(r[0]) for r in db_rows(out, "SELECT content_hash FROM events WHERE event = 'done'")}


def _started_after(out: Path, run: int) -> set[str]:
    return {str(r[0]) for r in db_rows(out, f"SELECT content_hash FROM events WHERE event = 'started' AND run > {run}")}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["analyze", "watch"])
def test_sigkill_mid_stream_then_restart(tiny_onnx: Path, tmp_path: Path, command: str, spawn: Spawn) -> None:
    inputs = write_pngs(tmp_path / "in", 40, shape=(90, 120))  # 4 tiles each
    out = tmp_path / "results"
    args = [command, str(tmp_path / "in"), "--model", str(tiny_onnx), "--out", str(out), "--max-batch", "4",
            "--readers", "2", "--queue", "2"]
    if command == "watch":
        args += ["--existing", "--settle", "100"]
    process = spawn(*args, cwd=tmp_path)
    wait_for(lambda: results_count(out) >= 5, 120, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_first = _done_before_restart(out)
    assert 0 < len(done_first) < len(inputs), "the kill should land mid-stream"
    first_run = int(db_rows(out, "SELECT MAX(id) FROM runs")[0][0])

    if command == "analyze":
        result = hep2edge(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    else:
        process = spawn(*args, cwd=tmp_path)
        wait_for(lambda: db_rows(out, "SELECT COUNT(*) FROM results")[0][0] == len(inputs), 180, process)
        _, err = stop(process)
        assert process.returncode == 0, err
    check_exactly_once(out, inputs)
    assert not (_started_after(out, first_run) & done_first), "an input finished before the kill ran again"


@pytest.mark.slow
def test_storm_of_small_files_with_bad_ones(tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    folder, out = tmp_path / "scan", tmp_path / "results"
    folder.mkdir()
    process = spawn("watch", str(folder), "--model", str(tiny_onnx), "--out", str(out), "--settle", "150",
                    "--queue", "4", "--writers", "4", cwd=tmp_path)
    wait_for(lambda: (out / "results.db").exists(), 60, process)
    staging = tmp_path / "staging"
    good = write_pngs(staging, 200, shape=(32, 40), seed=7, prefix="s")
    for index, path in enumerate(good):  # half renamed into place (complete at once), half written in place
        target = folder / f"{index // 4:05d}_p{index % 4}.png"  # I3A names: 50 specimens of 4 fields
        if index % 2:
            path.rename(target)
        else:
            target.write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "zero.tif").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored")
    (folder / "~$lock.png").write_bytes(b"ignored")
    wait_for(lambda: db_rows(out, "SELECT COUNT(*) FROM inputs WHERE state IN ('done', 'failed')")[0][0] == 202,
             240, process)
    _, err = stop(process, signal.SIGINT)
    assert process.returncode == 0, err
    check_exactly_once(out, [folder / f"{i // 4:05d}_p{i % 4}.png" for i in range(len(good))], failed=2)
    # four writers finish specimens concurrently: each gets one complete verdict all the same
    assert db_rows(out, "SELECT COUNT(*), SUM(complete), SUM(images) FROM specimens")[0] == (50, 50, 200)
    failed = dict(db_rows(out, "SELECT path, reason FROM inputs WHERE state = 'failed'"))
    assert sorted(Path(p).name for p in failed) == ["broken.png", "zero.tif"]
    assert "broken.png" in failed[str(folder / "broken.png")] and "empty" in failed[str(folder / "zero.tif")]


@pytest.mark.slow
def test_sigterm_finishes_in_flight_work_and_a_restart_completes(tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    inputs = write_pngs(tmp_path / "in", 30, shape=(90, 120), seed=3)
    out = tmp_path / "results"
    args = ["analyze", str(tmp_path / "in"), "--model", str(tiny_onnx), "--out", str(out), "--max-batch", "4"]
    process = spawn(*args, cwd=tmp_path)
    wait_for(lambda: results_count(out) >= 3, 120, process)
    stdout, stderr = stop(process, signal.SIGTERM)
    assert process.returncode == 0, stderr
    assert "SIGTERM" in stdout
    started = {r[0] for r in db_rows(out, "SELECT path FROM inputs WHERE state = 'seen'")}
    assert not started, f"claimed inputs left unfinished after SIGTERM: {started}"
    assert 3 <= results_count(out) < len(inputs)
    result = hep2edge(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_exactly_once(out, inputs)


def test_same_content_under_a_new_name_is_not_analysed_again(tiny_onnx: Path, tmp_path: Path) -> None:
    (original,) = write_pngs(tmp_path / "in", 1)
    out = tmp_path / "results"
    assert hep2edge("analyze", str(original), "--model", str(tiny_onnx), "--out", str(out),
                    cwd=tmp_path).returncode == 0
    copy = tmp_path / "in" / "renamed.png"
    copy.write_bytes(original.read_bytes())
    other = tmp_path / "other" / original.name  # same name, different content: its own result
    other.parent.mkdir()
    other.write_bytes(cv2.imencode(".png", np.full((40, 48), 3, np.uint8))[1].tobytes())
    result = hep2edge("analyze", str(copy), str(other), "--model", str(tiny_onnx), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert db_rows(out, "SELECT state FROM inputs WHERE path = ?", (str(copy),)) == [("alias",)]
    stems = sorted(p.stem for p in out.glob("*.json"))
    assert len(stems) == 2 and stems[0] == original.stem and stems[1].startswith(f"{original.stem}-")
    assert not os.path.exists(out / "renamed.json")


def test_batches_fill_across_images_with_several_writers(tiny_onnx: Path, tmp_path: Path) -> None:
    """16 one-tile images, max batch 8: the GPU thread batches frames from both readers, four writers write them."""
    import io

    from rich.console import Console

    from hep2edge.cli.reporter import RichReporter
    from hep2edge.runtime.service import run_service
    from hep2edge.runtime.settings import PipelineConfig, RunConfig
    from hep2edge.runtime.sources.files import FileListSource

    inputs = write_pngs(tmp_path / "in", 16, shape=(64, 64))
    out = tmp_path / "results"
    out.mkdir()
    config = RunConfig(command="analyze", out=out, model=tiny_onnx, backend="onnxruntime", device="cpu",
                       pipeline=PipelineConfig(readers=2, writers=4, max_batch=8, batch_wait_ms=200))
    summary = run_service(config, lambda journal: FileListSource(inputs), RichReporter(Console(file=io.StringIO())))
    assert summary.processed == 16 and not summary.failed
    assert summary.stages["infer"]["n"] < 16  # some calls carried tiles of several images
    check_exactly_once(out, inputs)
