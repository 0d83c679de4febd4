"""Issue 11 at unit level: one current result per path, regular files only (read once, confined), incomplete
files read again, the minimum field size, the in-flight byte budget and readable stems."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_journal import _result

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError, ImageReadError
from hep2edge.imageio import read_image
from hep2edge.regular_file import read_regular_file
from hep2edge.runtime.inflight import InflightBudget, decode_estimate
from hep2edge.runtime.journal import Journal, safe_stem
from hep2edge.runtime.results import result_row
from hep2edge.runtime.settings import SpecimenConfig, StageConfig
from hep2edge.runtime.sources import Item
from hep2edge.runtime.sources.watch import FolderWatchSource, StartupScan, WatchConfig
from hep2edge.runtime.specimens import update_specimen
from hep2edge.runtime.stage_timings import StageStats
from hep2edge.runtime.stages import Reader
from hep2edge.runtime.status import StatusBoard


def _png_bytes(shape: tuple[int, int] = (40, 48), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return cv2.imencode(".png", rng.integers(0, 256, shape, dtype=np.uint8))[1].tobytes()


def _row(path: str, stem: str, content_hash: str, specimen: str = "") -> dict[str, object]:
    """A journal results row for `path` (the key a source gave it)."""
    return {**result_row(_result(stem, content_hash, specimen=specimen)), "source_path": path}


def _reader(tmp_path: Path, **stage: object) -> tuple[Reader, Journal, StatusBoard]:
    journal, board = Journal(tmp_path / "results"), StatusBoard()
    reader = Reader(StageConfig(**stage), ModelContract(tile=64), journal, StageStats(), board,
                    tiles_on_host=True)
    return reader, journal, board


@pytest.fixture(autouse=True)
def _results(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()


# --- one current result per path -------------------------------------------------------------------------------
def test_new_content_at_a_path_supersedes_its_result(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "results")
    specimens = SpecimenConfig(images=2)
    for index, content in enumerate(("h1", "h2")):
        path = f"/in/00001_p{index}.png"
        assert journal.claim(path, content, f"00001_p{index}").action == "analyse"
        journal.complete(path, _row(path, f"00001_p{index}", content, "00001"))
    rewritten = journal.claim("/in/00001_p1.png", "h3", "00001_p1")
    assert rewritten.action == "analyse" and rewritten.stem == "00001_p1"  # its files are replaced, not doubled
    journal.complete("/in/00001_p1.png", _row("/in/00001_p1.png", "00001_p1", "h3", "00001"))
    update_specimen(journal, specimens, "00001")
    assert journal.query("SELECT source_path, content_hash FROM results ORDER BY source_path") == [
        ("/in/00001_p0.png", "h1"), ("/in/00001_p1.png", "h3")]
    assert journal.query("SELECT content_hash, superseded_by FROM superseded") == [("h2", "h3")]
    assert journal.query("SELECT images FROM specimens") == [(2,)]  # 2 files, 2 votes
    assert journal.query("SELECT COUNT(*) FROM events WHERE event = 'superseded'") == [(1,)]
    journal.close()


def test_a_superseded_content_stays_current_under_its_alias(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "results")
    journal.claim("/in/a.png", "h1", "a")
    journal.complete("/in/a.png", _row("/in/a.png", "a", "h1"))
    assert journal.claim("/in/copy.png", "h1", "copy").action == "duplicate"
    claim = journal.claim("/in/a.png", "h2", "a")
    assert claim.stem != "a"  # the copy still holds "a"
    journal.complete("/in/a.png", _row("/in/a.png", claim.stem, "h2"))
    assert sorted(journal.query("SELECT source_path, content_hash FROM results")) == [
        ("/in/a.png", "h2"), ("/in/copy.png", "h1")]
    assert dict(journal.query("SELECT path, state FROM inputs")) == {"/in/a.png": "done", "/in/copy.png": "done"}
    journal.close()


def test_an_old_journal_gains_file_signatures(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "results")
    journal._db.execute("DROP TABLE inputs")
    journal._db.execute("CREATE TABLE inputs (path TEXT PRIMARY KEY, content_hash TEXT, state TEXT NOT NULL, "
                        "reason TEXT, stem TEXT, run INTEGER, updated REAL NOT NULL)")
    journal._db.execute("INSERT INTO inputs VALUES ('/in/a.png', 'h1', 'done', '', 'a', 1, 0)")
    journal.close()
    journal = Journal(tmp_path / "results")
    assert journal.finished_signatures() == {"/in/a.png": None}  # unknown: treated as unchanged, not re-read
    journal.close()


def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "results")
    journal._db.execute("PRAGMA user_version = 99")
    journal.close()
    with pytest.raises(ConfigError, match="newer hep2edge"):
        Journal(tmp_path / "results")


# --- regular files only, read once, confined ---------------------------------------------------------------------
def test_a_fifo_is_refused_at_once_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.tif"
    os.mkfifo(fifo)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(_error(lambda: read_image(fifo))), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "reading a FIFO blocked"
    assert outcome and "FIFO" in outcome[0] and str(fifo) in outcome[0]


def _error(action: object) -> str:
    try:
        action()  # type: ignore[operator]
    except ImageReadError as exc:
        return str(exc)
    return ""


def test_the_watcher_skips_non_regular_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.mkfifo(tmp_path / "before.tif")  # found by the start-up scan
    (tmp_path / "b.png").write_bytes(_png_bytes())
    source = FolderWatchSource(WatchConfig(tmp_path, settle_ms=30), scan=StartupScan(analyse=True))
    items: list[Item] = []
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(lambda item: items.append(item) or True, stop))
    thread.start()
    time.sleep(0.5)
    os.mkfifo(tmp_path / "during.tif")  # seen by an event
    (tmp_path / "c.png").write_bytes(_png_bytes(seed=2))
    time.sleep(1.0)
    stop.set()
    thread.join(10)
    assert sorted(item.name for item in items) == ["b", "c"]
    assert items[0].within == source.root
    skipped = [r.getMessage() for r in caplog.records if "FIFO" in r.getMessage()]
    assert any("before.tif" in m for m in skipped) and any("during.tif" in m for m in skipped)


def test_a_file_swapped_for_a_link_outside_is_not_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "scan", tmp_path / "secret.png"
    root.mkdir()
    outside.write_bytes(_png_bytes(seed=1))
    queued = root / "a.png"
    queued.write_bytes(_png_bytes())
    item = Item(key=str(queued), name="a", path=queued, within=root.resolve())
    queued.unlink()
    queued.symlink_to(outside)  # replaced after it was queued, before a reader opens it
    reader, journal, board = _reader(tmp_path)
    assert reader.read(item, 0, time.perf_counter()) is None
    assert board.failed == 1 and "outside the watched folder" in board.failures[0][1]
    assert journal.query("SELECT COUNT(*) FROM results") == [(0,)]
    with pytest.raises(ImageReadError, match="outside"):
        read_regular_file(queued, 1 << 20, root.resolve())
    assert read_regular_file(queued, 1 << 20).data == outside.read_bytes()  # a file the user names may link anywhere
    journal.close()


def test_the_reader_opens_an_input_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash and decode come from the same bytes: a file swapped between two opens cannot mix them."""
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes())
    opened: list[str] = []
    real_open, real_os_open = open, os.open

    def counting_open(file: object, *a: object, **k: object) -> object:
        opened.append(str(file))
        return real_open(file, *a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # Path.read_bytes opens through io.open
    monkeypatch.setattr(os, "open", lambda file, *a, **k: (opened.append(str(file)), real_os_open(file, *a, **k))[1])
    reader, journal, _ = _reader(tmp_path)
    frame = reader.read(Item(key=str(path), name="a", path=path), 0, time.perf_counter())
    assert frame is not None and opened.count(str(path)) == 1
    journal.close()


# --- files still being written -----------------------------------------------------------------------------------
def test_a_truncated_file_written_just_now_is_read_again_not_failed(tmp_path: Path) -> None:
    path, whole = tmp_path / "a.png", _png_bytes((90, 120))
    path.write_bytes(whole[: len(whole) // 2])  # the copy paused longer than --settle
    retries: list[int] = []
    item = Item(key=str(path), name="a", path=path, retry=lambda: retries.append(1))
    reader, journal, board = _reader(tmp_path)
    assert reader.read(item, 0, time.perf_counter()) is None
    assert board.failed == 0 and board.waiting == 1 and retries == [1]
    assert journal.query("SELECT state FROM inputs") == [("incomplete",)]
    path.write_bytes(whole)  # the rest arrives
    assert reader.read(item, 1, time.perf_counter()) is not None and board.failed == 0
    journal.close()


def test_a_truncated_file_untouched_for_a_while_is_a_failure(tmp_path: Path) -> None:
    path, whole = tmp_path / "a.png", _png_bytes((90, 120))
    path.write_bytes(whole[: len(whole) // 2])
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    reader, journal, board = _reader(tmp_path)
    assert reader.read(Item(key=str(path), name="a", path=path, retry=lambda: None), 0, time.perf_counter()) is None
    assert board.failed == 1 and "truncated PNG" in board.failures[0][1]
    journal.close()


# --- sizes and memory ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (1, 2000), (15, 300)])
def test_fields_smaller_than_a_quarter_tile_are_refused(tmp_path: Path, shape: tuple[int, int]) -> None:
    path = tmp_path / "tiny.png"
    path.write_bytes(_png_bytes(shape))
    reader, journal, board = _reader(tmp_path)
    assert reader.read(Item(key=str(path), name="tiny", path=path), 0, time.perf_counter()) is None
    assert board.failed == 1
    assert f"{shape[1]} x {shape[0]} pixels" in board.failures[0][1] and "at least 16" in board.failures[0][1]
    journal.close()


def test_the_inflight_budget_bounds_bytes_and_lets_one_large_input_through() -> None:
    budget, never = InflightBudget(100), threading.Event()
    assert budget.reserve(60, never) and budget.reserve(40, never)
    cancelled = threading.Event()
    waiting = threading.Thread(target=lambda: budget.reserve(10, never))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive() and budget.used == 100  # no room: waits
    budget.release(60)
    waiting.join(2)
    assert not waiting.is_alive() and budget.used == 50
    cancelled.set()
    assert not budget.reserve(500, cancelled)  # cancelled while waiting
    budget.release(50)
    assert budget.reserve(500, never) and budget.peak == 500  # alone, a larger one runs


def test_decode_estimate_sizes_from_the_header_and_the_reader_releases_everything(tmp_path: Path) -> None:
    data = _png_bytes((100, 200))
    assert decode_estimate(data) == len(data) + 100 * 200 * 8
    reader, journal, _ = _reader(tmp_path)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    frame = reader.read(Item(key=str(path), name="a", path=path), 0, time.perf_counter())
    assert frame is not None and reader.budget.used == frame.reserved > 0
    duplicate = reader.read(Item(key=str(path), name="a", path=path), 1, time.perf_counter())
    assert duplicate is None and reader.budget.used == frame.reserved  # nothing leaks on a skipped input
    journal.close()


def test_stems_keep_letters_of_any_script() -> None:
    assert safe_stem("über ä") == "über_ä"
    assert safe_stem("日本 語") == "日本_語"
    assert safe_stem("u\u0308ber") == "über"  # NFD from macOS file names -> NFC
    assert safe_stem("a/../b") == "a_.._b" and safe_stem("...") == "image"
    assert len(safe_stem("x" * 500)) == 120
