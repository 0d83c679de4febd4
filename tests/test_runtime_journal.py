"""The journal (exactly-once bookkeeping), crash recovery of complete results, tables and specimen verdicts."""

from __future__ import annotations

import csv
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.runtime.journal import Journal, safe_stem
from hep2edge.runtime.results import ImageFacts, ModelInfo, TileOutputs, image_result, result_row
from hep2edge.runtime.service import clean_temporaries, recover
from hep2edge.runtime.settings import SpecimenConfig
from hep2edge.runtime.sinks import IMAGE_SINKS, TABLE_SINKS, ImageOutput
from hep2edge.runtime.specimens import specimen_verdict, update_specimen
from hep2edge.tiling import tile_grid

MODEL = ModelInfo("resnet18-abc", "fp32", "onnxruntime", "model.onnx", "cpu")


def _result(stem: str, content_hash: str, pattern: int = 1, positive: float = 0.8, specimen: str = "") -> dict:
    grid = tile_grid(40, 70, 64)
    probs = np.full((len(grid), 7), 0.05, np.float32)
    probs[:, pattern] = 0.7
    outputs = TileOutputs(np.ones((len(grid), 64, 64), np.uint8), probs, np.full(len(grid), positive, np.float32))
    mask = np.full((40, 70), 255, np.uint8)
    facts = ImageFacts(f"/in/{stem}.png", content_hash, stem, specimen, 40, 70, "uint8", {"total": 5.0})
    return image_result(facts, outputs, grid, mask, np.ones(len(grid)), MODEL, ModelContract(tile=64))


def test_result_document_has_what_a_lab_needs() -> None:
    result = _result("a", "h1", pattern=3, positive=0.8)
    assert result["pattern"]["top"] == "centromere" and len(result["pattern"]["probabilities"]) == 7
    assert result["intensity"] == {"class": "positive", "probability": 0.8, "positive_probability": 0.8}
    assert result["foreground_fraction"] == 1.0 and result["content_hash"] == "h1"
    assert result["model"]["id"] == "resnet18-abc" and result["model"]["precision"] == "fp32"
    assert {"index", "top", "left", "pattern", "foreground_fraction"} <= set(result["tiles"][0])
    assert result_row(result)["p_centromere"] == pytest.approx(0.7)


def test_claim_analyses_once_and_records_aliases(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.claim("/in/a.png", "h1", "a").action == "analyse"
    assert journal.claim("/in/a.png", "h1", "a").detail == "in progress"
    journal.complete("/in/a.png", result_row(_result("a", "h1")))
    again = journal.claim("/in/a.png", "h1", "a")
    alias = journal.claim("/in/copy_of_a.png", "h1", "copy_of_a")
    assert again.action == alias.action == "duplicate" and alias.stem == "a"
    states = dict(journal.query("SELECT path, state FROM inputs"))
    assert states == {"/in/a.png": "done", "/in/copy_of_a.png": "alias"}
    journal.close()


def test_same_name_new_content_gets_its_own_stem(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.claim("/day1/x.png", "h1", "x")
    journal.complete("/day1/x.png", result_row(_result("x", "h1")))
    claim = journal.claim("/day2/x.png", "h2", "x")
    assert claim.action == "analyse" and claim.stem == "x-h2"
    assert safe_stem("a b/../c") == "a_b_.._c"
    journal.close()


def test_failed_inputs_are_skipped_until_retry(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.claim("/in/bad.png", "hb", "bad")
    journal.fail("/in/bad.png", "hb", "/in/bad.png: corrupt PNG")
    assert journal.claim("/in/bad.png", "hb", "bad").action == "failed"
    assert journal.claim("/in/bad_copy.png", "hb", "bad_copy").action == "failed"
    journal.close()
    later = Journal(tmp_path)
    assert sorted(later.requeue_failed()) == ["/in/bad.png", "/in/bad_copy.png"]
    assert later.claim("/in/bad.png", "hb", "bad", retry_failed=True).action == "analyse"
    later.close()


def test_a_restart_keeps_stems_and_finds_unfinished_inputs(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.note_queued("/in/q.png")
    first.claim("/in/s.png", "hs", "s")
    first.close()
    second = Journal(tmp_path)
    assert sorted(p for p, _, _ in second.unfinished()) == ["/in/q.png", "/in/s.png"]
    assert second.claim("/in/s.png", "hs", "other-name").stem == "s"
    second.close()


def test_complete_files_without_a_journal_commit_are_recovered(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    claim = journal.claim("/in/k.png", "hk", "k")
    result = _result(claim.stem, "hk")
    IMAGE_SINKS.get("json")(tmp_path).write(ImageOutput(result, np.zeros((40, 70), np.uint8),
                                                        np.zeros((40, 70), np.uint8)))
    journal.claim("/in/half.png", "hh", "half")  # started, no files: must be analysed again
    (tmp_path / ".k.json.abc123.tmp").write_text("{")  # a killed atomic write
    journal.close()
    restarted = Journal(tmp_path)
    assert clean_temporaries(tmp_path) == 1 and not list(tmp_path.glob(".*.tmp"))
    assert recover(restarted, tmp_path) == 1
    assert restarted.query("SELECT stem FROM results") == [("k",)]
    assert [p for p, _, _ in restarted.unfinished()] == ["/in/half.png"]
    restarted.close()


def test_csv_is_regenerated_not_appended(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    table = TABLE_SINKS.get("csv")(tmp_path)
    for name in ("a", "b"):
        journal.claim(f"/in/{name}.png", name, name)
        journal.complete(f"/in/{name}.png", result_row(_result(name, name)))
        table.refresh(journal)
    table.refresh(journal)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["stem"] for r in rows] == ["a", "b"] and rows[0]["pattern"] == "speckled"
    assert sqlite3.connect(tmp_path / "results.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    journal.close()


def test_specimen_verdict_when_the_group_completes(tmp_path: Path) -> None:
    config = SpecimenConfig(images=3)
    journal = Journal(tmp_path)
    for k, pattern in enumerate((2, 2, 5), start=1):
        stem = f"00042_p{k}"
        journal.claim(f"/in/{stem}.tif", stem, stem)
        journal.complete(f"/in/{stem}.tif", result_row(_result(stem, stem, pattern, 0.3, config.specimen_of(stem))))
        written = update_specimen(journal, config, "00042")
        assert written == (k == 3)
    (row,) = journal.query("SELECT specimen, images, complete, pattern, intensity FROM specimens")
    assert row == ("00042", 3, 1, "nucleolar", "intermediate")
    journal.close()


def test_vote_and_mean_can_disagree() -> None:
    low, high = [0.0] * 7, [0.0] * 7
    low[0], low[1] = 0.51, 0.49
    high[0], high[1] = 0.05, 0.95
    rows = [("homogeneous", "positive", low, 0.6), ("homogeneous", "positive", low, 0.6),
            ("speckled", "intermediate", high, 0.1)]
    assert specimen_verdict(rows, "vote")["pattern"] == "homogeneous"
    assert specimen_verdict(rows, "mean")["pattern"] == "speckled"
    assert specimen_verdict(rows, "vote")["intensity"] == "positive"
    assert specimen_verdict(rows, "mean")["intensity"] == "intermediate"


class _ReadThenPause(Journal):
    """A journal whose specimen read, on the thread named 'slow', pauses before the caller writes its verdict."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.read_done, self.other_done = threading.Event(), threading.Event()

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        rows = super().query(sql, parameters)
        if threading.current_thread().name == "slow" and "FROM results WHERE specimen" in sql:
            self.read_done.set()
            self.other_done.wait(0.5)  # with the exclusive read-to-write, the other writer cannot finish meanwhile
        return rows


def test_concurrent_writers_never_leave_an_older_specimen_verdict(tmp_path: Path) -> None:
    config = SpecimenConfig(images=2)
    journal = _ReadThenPause(tmp_path)

    def complete(k: int) -> None:
        stem = f"00042_p{k}"
        journal.claim(f"/in/{stem}.tif", stem, stem)
        journal.complete(f"/in/{stem}.tif", result_row(_result(stem, stem, 2, 0.3, "00042")))

    complete(1)
    complete(2)
    slow = threading.Thread(target=update_specimen, args=(journal, config, "00042"), name="slow")
    slow.start()
    assert journal.read_done.wait(10)

    def third() -> None:  # another writer commits a third image of the specimen and updates the verdict
        complete(3)
        update_specimen(journal, config, "00042")
        journal.other_done.set()

    other = threading.Thread(target=third)
    other.start()
    slow.join(10)
    other.join(10)
    assert journal.query("SELECT images FROM specimens") == [(3,)]
    journal.close()


def test_specimen_config_is_checked() -> None:
    assert SpecimenConfig().specimen_of("00012_p3") == "00012"
    assert SpecimenConfig().specimen_of("HOM_01") == ""
    assert SpecimenConfig(pattern=r"^([A-Z]+)_").specimen_of("HOM_01") == "HOM"
    with pytest.raises(ConfigError, match="one group"):
        SpecimenConfig(pattern="^x")
    with pytest.raises(ConfigError, match="vote, mean"):
        SpecimenConfig(method="max")


def test_one_run_per_results_folder(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    with pytest.raises(ConfigError, match="another hep2edge run is using these RESULTS"):
        Journal(tmp_path)
    first.close()
    Journal(tmp_path).close()  # released on close (and by the kernel when a run is killed)


def test_stage_percentiles() -> None:
    from hep2edge.runtime.stage_timings import StageStats, percentile_table

    stats = StageStats()
    for value in range(1, 101):
        stats.add("infer", float(value))
    into: dict[str, float] = {}
    with stats.time("decode", into):
        pass
    table = stats.percentiles()
    assert list(table) == ["decode", "infer"]  # pipeline order
    assert table["infer"]["p50"] == pytest.approx(50.5) and table["infer"]["p99"] == pytest.approx(99.01)
    assert into["decode"] >= 0 and table["decode"]["n"] == 1
    assert percentile_table(table).row_count == 2
