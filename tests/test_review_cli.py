"""`hep2edge results confirm | export | to-dataset` and `hep2edge review`: as a user runs them, bad input included."""

from __future__ import annotations

import csv
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from cli_support import run_cli_without
from review_support import results_fixture, review_template_fixture, reviews  # noqa: F401
from runtime_support import ENV, wait_for

from hep2edge.imageio import read_image, read_mask
from hep2edge.review.db import ResultsDB
from hep2edge.review.reviews import ReviewRequest, record_review


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process, as its entry point does; (exit code, stdout, stderr)."""
    from hep2edge.cli.app import main

    with mock.patch.object(sys, "argv", ["hep2edge", *args]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def schema(results: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(results / "results.db") as db:
        return sorted(db.execute("SELECT type, name FROM sqlite_master"))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_confirm_and_correct_from_the_command_line(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "results", "confirm", str(results), "00001", "--reviewer", "carol")
    assert code == 0 and "00001: confirmed by carol" in out
    code, out, _ = cli(capsys, "results", "confirm", str(results), "00002", "--reviewer", "carol", "-p",
                       "Nuclear Membrane", "-p", "mitsp", "--intensity", "intermediate", "--comment", "mixed")
    assert code == 0 and "00002: corrected by carol: numem + mitsp / intermediate" in out
    code, out, _ = cli(capsys, "results", "confirm", str(results), "slide_a", "--reviewer", "dan", "--intensity",
                       "intermediate")
    assert code == 0 and "slide_a: corrected by dan" in out
    assert [r[:3] for r in reviews(results)] == [("00001", "carol", "confirmed"), ("00002", "carol", "corrected"),
                                                 ("slide_a", "dan", "corrected")]


@pytest.mark.parametrize("args, line", [
    (["results", "confirm", "{R}", "00001", "--reviewer", "x", "--pattern", "speckeld"], "unknown pattern 'speckeld'"),
    (["results", "confirm", "{R}", "00001", "--reviewer", "x", "--intensity", "weak"], "unknown intensity 'weak'"),
    (["results", "confirm", "{R}", "00001"], "a reviewer name is required"),
    (["results", "confirm", "{R}", "99999", "--reviewer", "x"], "no specimen '99999'"),
    (["results", "export", "{R}", "--format", "pdf"], "--format pdf"),
    (["results", "to-dataset", "{R}", "{R}"], "exists and is not an empty folder"),
    (["review", "{R}", "--host", "0.0.0.0"], "needs an access token"),
    (["review", "{R}", "--token", "short"], "at least 16 characters"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(results: Path, capsys: pytest.CaptureFixture[str],
                                                         args: list[str], line: str) -> None:
    before = schema(results), sorted(p.name for p in results.iterdir())
    code, _, err = cli(capsys, *(a.replace("{R}", str(results)) for a in args))
    assert code == 2 and len(err.strip().splitlines()) == 1 and line in err, err
    assert (schema(results), sorted(p.name for p in results.iterdir())) == before


@pytest.mark.parametrize("command", [["results", "confirm", "{R}", "00001", "--reviewer", "x"],
                                     ["results", "export", "{R}"], ["results", "to-dataset", "{R}", "{R}/../ds"],
                                     ["review", "{R}", "--port", "0"]])
def test_a_results_folder_the_review_cannot_use_is_one_line(results: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            command: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, *(a.replace("{R}", str(empty)) for a in command))
    assert code == 2 and "no results.db here" in err and len(err.strip().splitlines()) == 1
    assert not any(empty.iterdir())
    with sqlite3.connect(results / "results.db") as db:
        db.execute("PRAGMA user_version = 99")
    before = schema(results)
    code, _, err = cli(capsys, *(a.replace("{R}", str(results)) for a in command))
    assert code == 2 and "written by a newer hep2edge (journal schema 99" in err and len(err.strip().splitlines()) == 1
    assert schema(results) == before and not (tmp_path / "ds").exists()
    for extra in results.glob("results.db-*"):  # the WAL would still hold the real pages
        extra.unlink()
    (results / "results.db").write_bytes(b"not a database at all" * 100)
    code, _, err = cli(capsys, *(a.replace("{R}", str(results)) for a in command))
    assert code == 2 and "not a readable SQLite database" in err


def test_a_port_in_use_is_one_line(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = cli(capsys, "review", str(results), "--port", str(port))
    assert code == 2 and f"127.0.0.1:{port} is already in use" in err and len(err.strip().splitlines()) == 1
    assert "reviews" not in {name for _, name in schema(results)}


def test_without_the_review_extra_the_web_app_and_hl7_say_what_to_install(results: Path, tmp_path: Path) -> None:
    blocked = ("fastapi", "uvicorn", "hl7apy")
    for args in (["review", str(results)], ["results", "export", str(results), "--format", "hl7"]):
        done = run_cli_without(blocked, args, tmp_path, ENV)
        assert done.returncode == 2 and "pip install 'hep2edge[review]'" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    done = run_cli_without(blocked, ["results", "export", str(results), "--format", "csv"], tmp_path, ENV)
    assert done.returncode == 0, done.stderr  # nothing reviewed yet: nothing new, and no extra needed


def test_review_serves_the_worklist_and_asks_for_the_token_it_printed(results: Path, tmp_path: Path) -> None:
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "hep2edge", "review", str(results), "--port", str(port),
                                "--new-token"], cwd=tmp_path, env=ENV, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        lines = [process.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert lines[0].startswith(f"review: http://127.0.0.1:{port}/"), lines
        token = lines[1].rsplit(" ", 1)[1].strip()
        wait_for(lambda: _answers(port), 30, process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True, timeout=10) as client:
            assert "Access token" in client.get("/").text
            page = client.get(f"/?token={token}").text
            assert all(f'data-key="{key}"' in page for key in ("00001", "00002", "00003", "00004", "slide_a"))
        for target in ("/files/../results.db", "/files/..%2F..%2Fetc%2Fpasswd", "/files/%2e%2e/results.db"):
            assert _raw_status(port, target, token) == 404, target
        assert _raw_status(port, "/files/00001_p1_overlay.png", token) == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _raw_status(port: int, target: str, token: str) -> int:
    """The status of a GET sent byte for byte (no client-side `..` clean-up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        head = sock.recv(64).decode("latin-1")
    return int(head.split()[1])


def _review(results: Path) -> None:
    store = ResultsDB(results)
    record_review(store, ReviewRequest("00001", "alice"))
    record_review(store, ReviewRequest("00002", "bob", ("speckled", "nucleolar"), "positive", "mixed | two\nlines"))
    record_review(store, ReviewRequest("00004", "bob", ("numem",), "intermediate"))


def test_to_dataset_writes_what_check_passes(results: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _review(results)
    out = tmp_path / "reviewed"
    code, text, err = cli(capsys, "results", "to-dataset", str(results), str(out))
    assert code == 0, err
    assert "3 reviewed specimen(s), 11 image(s)" in text
    code, text, err = cli(capsys, "check", str(out))
    assert code == 0 and "3 patients, 11 images, no problems" in text, err
    rows = list(csv.DictReader((out / "labels.csv").open()))
    mixed = [r for r in rows if r["patient"] == "00002"]
    assert len(mixed) == 4 and {(r["pattern"], r["patterns"], r["intensity"]) for r in mixed} == {
        ("speckled", "speckled;nucleolar", "positive")}
    assert {r["mask_source"] for r in rows} == {"predicted"}
    first = rows[0]
    assert read_mask(out / first["mask"]).shape == read_image(out / first["image"]).shape
    assert (out / first["image"]).read_bytes() == Path(first["source"]).read_bytes()


def test_to_dataset_refuses_missing_sources_unless_told_and_leaves_no_half_dataset(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reviewed"
    code, _, err = cli(capsys, "results", "to-dataset", str(results), str(out))
    assert code == 2 and "no reviewed specimen" in err and not out.exists()
    _review(results)
    moved = tmp_path / "moved.tif"
    with sqlite3.connect(results / "results.db") as db:
        source = Path(db.execute("SELECT source_path FROM results WHERE stem = '00001_p2'").fetchone()[0])
    source.rename(moved)
    try:
        code, _, err = cli(capsys, "results", "to-dataset", str(results), str(out))
        assert code == 2 and "00001_p2" in err and "--skip-missing" in err and len(err.strip().splitlines()) == 1
        assert not out.exists() and not list(tmp_path.glob(".reviewed.*"))
        code, text, err = cli(capsys, "results", "to-dataset", str(results), str(out), "--skip-missing")
        assert code == 0 and "10 image(s)" in text and "skipped" in err
    finally:
        moved.rename(source)


@pytest.mark.slow
def test_train_takes_the_reviewed_dataset(results: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    store = ResultsDB(results)  # two small specimens (3 fields + 1 lone field) keep the run to one step
    record_review(store, ReviewRequest("00004", "bob", ("numem",), "intermediate"))
    record_review(store, ReviewRequest("slide_a", "bob"))
    out = tmp_path / "reviewed"
    assert cli(capsys, "results", "to-dataset", str(results), str(out))[0] == 0
    code, _, err = cli(capsys, "train", "--data", str(out), "--out", str(tmp_path / "run"), "--encoder", "resnet18",
                       "--decoder-channels", "32,16,16,8,8", "--tile", "64", "--epochs", "1", "--folds", "2",
                       "--fold", "0", "--batch-size", "64", "--no-progress", "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "run" / "fold_0" / "best.pt").is_file()
