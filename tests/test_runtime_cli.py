"""`hep2edge analyze / watch / camera` end to end with the ONNX Runtime backend: real images, bad inputs,
an unwritable RESULTS, the summary, exit codes."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
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

from hep2edge.cli.runtime_commands import stable_watch_dir


def _imread(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


@pytest.mark.slow
def test_analyze_real_images(agh_ana: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    images = sorted((agh_ana / "images").glob("*.png"))[:2]
    out = tmp_path / "results"
    result = hep2edge("analyze", *map(str, images), "--model", str(tiny_onnx), "--out", str(out), "--backend",
                      "onnxruntime", "--channel", "green", "--overlay", "--stats", "--max-batch", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "channel policy: green" in result.stdout and "p95" in result.stdout and "end_to_end" in result.stdout
    check_exactly_once(out, images)
    doc = json.loads((out / f"{images[0].stem}.json").read_text())
    height, width = _imread(images[0]).shape[:2]
    assert doc["image"] == {"height": height, "width": width, "dtype": "uint8"}
    mask = _imread(out / f"{images[0].stem}_mask.png", cv2.IMREAD_UNCHANGED)
    assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
    assert doc["foreground_fraction"] == pytest.approx(np.count_nonzero(mask) / mask.size, abs=1e-6)
    assert abs(sum(doc["pattern"]["probabilities"].values()) - 1) < 1e-4
    assert doc["model"]["backend"] == "onnxruntime" and doc["model"]["precision"] == "fp32"
    assert set(doc["timings_ms"]) >= {"read", "decode", "preprocess", "infer", "stitch", "total"}
    overlay = _imread(out / f"{images[0].stem}_overlay.png")
    assert overlay.shape == (height, width, 3)
    assert (out / "config.yaml").is_file()


@pytest.mark.slow
def test_watch_real_images_then_clean_stop(agh_ana: Path, tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    folder, out = tmp_path / "scanner", tmp_path / "results"
    folder.mkdir()
    process = spawn("watch", str(folder), "--model", str(tiny_onnx), "--out", str(out), "--settle", "200",
                    "--channel", "green", cwd=tmp_path)
    wait_for(lambda: (out / "results.db").exists(), 60, process)
    image = sorted((agh_ana / "images").glob("*.png"))[0]
    shutil.copy(image, folder / ".incoming.png")  # the scanner's temporary name, then the completion rename
    (folder / ".incoming.png").rename(folder / image.name)
    wait_for(lambda: results_count(out) == 1, 120, process)
    _, err = stop(process)
    assert process.returncode == 0, err
    check_exactly_once(out, [folder / image.name])


def _bad_inputs(folder: Path) -> dict[str, str]:
    """file name -> the words its one-line reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = cv2.imencode(".png", np.full((40, 40), 9, np.uint8))[1].tobytes()
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"IEND\xaeB`\x82")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.tif").write_bytes(b"")
    (folder / "float.tif").write_bytes(cv2.imencode(".tiff", np.zeros((8, 8), np.float32))[1].tobytes())
    header = bytearray(good)
    header[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR claims 60000 x 60000
    (folder / "huge.png").write_bytes(bytes(header))
    (folder / "big.png").write_bytes(good + b"\x00" * (2 << 20))  # over --max-file-mb 1
    return {"corrupt.png": "corrupt", "truncated.png": "truncated", "empty.tif": "empty",
            "float.tif": "unsupported", "huge.png": "over the limit", "big.png": "over the limit"}


def test_bad_inputs_fail_with_one_line_each(tiny_onnx: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "results"
    good = write_pngs(folder, 2)
    expected = _bad_inputs(folder)
    result = hep2edge("analyze", str(folder), str(tmp_path / "missing.png"), "--model", str(tiny_onnx),
                      "--out", str(out), "--max-file-mb", "1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    reasons = dict(db_rows(out, "SELECT path, reason FROM inputs WHERE state = 'failed'"))
    assert len(reasons) == len(expected) + 1
    for name, words in expected.items():
        reason = reasons[str((folder / name).absolute())]
        assert name in reason and words in reason and "\n" not in reason, reason
        assert reason in result.stderr
    assert "missing.png" in reasons[str((tmp_path / "missing.png").absolute())]
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(p.stem for p in good)

    again = hep2edge("analyze", str(folder), "--model", str(tiny_onnx), "--out", str(out), cwd=tmp_path)
    assert again.returncode == 1, again.stderr  # still no result for them: not a success
    assert re.search(rf"skipped \(failed before\)\s*│\s*{len(expected)}\b", again.stdout), again.stdout
    retry = hep2edge("analyze", str(folder), "--model", str(tiny_onnx), "--out", str(out), "--retry-failed",
                     "--max-file-mb", "1", cwd=tmp_path)
    assert retry.returncode == 1 and f"{len(expected) + 1} failed input(s) queued again" in retry.stdout


def test_unwritable_results_stop_intake_and_keep_what_is_done(tiny_onnx: Path, tmp_path: Path) -> None:
    inputs = write_pngs(tmp_path / "in", 6)
    out = tmp_path / "results"
    (out / f"{inputs[3].stem}_mask.png").mkdir(parents=True)  # this result's mask cannot be renamed into place
    result = hep2edge("analyze", str(tmp_path / "in"), "--model", str(tiny_onnx), "--out", str(out),
                      "--readers", "1", "--max-batch", "1", "--queue", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot write" in result.stderr and "intake stopped" in result.stderr
    assert "Traceback" not in result.stderr
    done = [r[0] for r in db_rows(out, "SELECT stem FROM results")]
    assert inputs[3].stem not in done
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(done)
    (out / f"{inputs[3].stem}_mask.png").rmdir()
    rerun = hep2edge("analyze", str(tmp_path / "in"), "--model", str(tiny_onnx), "--out", str(out), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    check_exactly_once(out, inputs)


def test_camera_video_file(tiny_onnx: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    out = tmp_path / "results"
    result = hep2edge("camera", str(video), "--model", str(tiny_onnx), "--out", str(out), "--fps", "5",
                      "--buffer", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frames = sorted(p.stem for p in out.glob("frame_*.json") if not p.stem.endswith("_mask"))
    assert len(frames) == 5 and frames[0] == "frame_000000"
    assert db_rows(out, "SELECT COUNT(*) FROM results") == [(5,)]


def test_missing_inputs_and_models_exit_2_with_one_line(tiny_onnx: Path, tmp_path: Path) -> None:
    result = hep2edge("analyze", "--model", str(tiny_onnx), cwd=tmp_path)
    assert result.returncode == 2 and "pass PATH..." in result.stderr
    write_pngs(tmp_path / "in", 1)
    result = hep2edge("analyze", str(tmp_path / "in"), cwd=tmp_path)
    assert result.returncode == 2 and "--model" in result.stderr and "Traceback" not in result.stderr
    result = hep2edge("analyze", str(tmp_path / "in"), "--model", str(tiny_onnx), "--backend", "coreml",
                      cwd=tmp_path)
    assert result.returncode == 2 and "valid names: onnxruntime, openvino, tensorrt, torch" in result.stderr
    result = hep2edge("watch", str(tmp_path / "nope"), "--model", str(tiny_onnx), cwd=tmp_path)
    assert result.returncode == 2 and "not a folder" in result.stderr


@pytest.mark.parametrize(("option", "words"), [
    (("--stitch", "mean"), "--stitch mean: valid methods are majority, or"),
    (("--preprocess", "gpu"), "--preprocess gpu: valid modes are auto, host, cuda"),
    (("--device", "tpu"), "--device tpu: valid devices are auto, cpu, cuda, gpu, npu"),
    (("--device", "gpu", "--backend", "onnxruntime"), "--device gpu|npu are OpenVINO's"),
    (("--precision-hint", "bf16", "--backend", "onnxruntime"), "--precision-hint and --device gpu|npu"),
    (("--channel", "purple"), "unknown channel policy 'purple'"),
    (("--specimen-method", "avg"), "unknown specimen method 'avg'"),
])
def test_bad_options_exit_2_before_results_or_journal_exist(tiny_onnx: Path, tmp_path: Path, option: tuple[str, str],
                                                           words: str, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Found per image, a bad option would fail (and journal as failed) every input of the run."""
    from hep2edge.cli.app import main

    (image,) = write_pngs(tmp_path / "in", 1)
    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["hep2edge", "analyze", str(image), "--model", str(tiny_onnx),
                                      "--out", str(out), *option])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and words in err and "\n" not in err, err
    assert not out.exists()


def test_tile_overlap_cuts_more_tiles_and_is_recorded(tiny_onnx: Path, tmp_path: Path) -> None:
    from conftest import TINY_TILE as tile

    from hep2edge.tiling import tile_grid

    (image,) = write_pngs(tmp_path / "in", 1, shape=(200, 260))
    counts = {}
    for overlap in (0, tile // 2):
        out = tmp_path / f"results-{overlap}"
        result = hep2edge("analyze", str(image), "--model", str(tiny_onnx), "--out", str(out), "--backend",
                          "onnxruntime", "--tile-overlap", str(overlap), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        counts[overlap] = len(json.loads((out / f"{image.stem}.json").read_text())["tiles"])
        assert counts[overlap] == len(tile_grid(200, 260, tile, overlap))
        assert yaml.safe_load((out / "config.yaml").read_text())["stage"]["tile_overlap"] == overlap
    assert counts[tile // 2] > counts[0]


def test_a_tile_overlap_the_model_cannot_have_is_refused_before_any_result(tiny_onnx: Path, tmp_path: Path) -> None:
    (image,) = write_pngs(tmp_path / "in", 1)
    out = tmp_path / "results"
    result = hep2edge("analyze", str(image), "--model", str(tiny_onnx), "--out", str(out), "--tile-overlap", "4096",
                      cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "--tile-overlap 4096 px: must be below the model's" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_stable_watch_folder_for_restarts(tmp_path: Path) -> None:
    assert stable_watch_dir(tmp_path / "scan") == stable_watch_dir(tmp_path / "scan" / ".." / "scan")
    assert stable_watch_dir(tmp_path / "a") != stable_watch_dir(tmp_path / "b")
    assert stable_watch_dir(Path("/scanner/output")) == Path("runs/watch/scanner_output")


def test_watch_as_the_design_card_writes_it(tiny_onnx: Path, tmp_path: Path, spawn: Spawn) -> None:
    """`hep2edge watch FOLDER`: newest runs/export/<n>, a stable RESULTS folder, both named; a restart reuses it."""
    for number in (1, 2):
        (tmp_path / "runs" / "export" / str(number)).mkdir(parents=True)
    shutil.copy(tiny_onnx, tmp_path / "runs" / "export" / "2" / "model.onnx")
    folder = tmp_path / "scanner" / "output"
    write_pngs(folder, 1)
    out = tmp_path / stable_watch_dir(folder)
    for expected in (1, 2):
        process = spawn("watch", str(folder), "--existing", "--settle", "50", cwd=tmp_path)
        wait_for(lambda n=expected: results_count(out) == n, 60, process)  # type: ignore[misc]
        stdout, stderr = stop(process)
        assert process.returncode == 0, stderr
        assert "runs/export/2/model.onnx" in stdout and f"results: {stable_watch_dir(folder)}" in stdout
        if expected == 1:
            write_pngs(folder, 1, seed=9, prefix="next")
    assert db_rows(out, "SELECT COUNT(*) FROM runs") == [(2,)]
    check_exactly_once(out, sorted(folder.glob("*.png")))
