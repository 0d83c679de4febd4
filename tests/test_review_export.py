"""LIS export: HL7 v2.5.1 ORU^R01 (parsed back and validated by hl7apy) and CSV; each review exported once."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from review_support import results_fixture, review_template_fixture  # noqa: F401
from test_review_cli import _in_tmp, cli  # noqa: F401

from hep2edge.labels import PATTERNS
from hep2edge.review.db import ResultsDB
from hep2edge.review.icap import ICAP, describe, icap_label
from hep2edge.review.reviews import ReviewRequest, record_review

hl7 = pytest.importorskip("hep2edge.review.hl7")


def _segments(message: str, name: str) -> list[list[str]]:
    return [segment.split("|") for segment in message.split("\r") if segment.startswith(name + "|")]


def _by_specimen(path: Path) -> dict[str, str]:
    hl7.parse(path.read_text())  # every message parses and validates (hl7apy, strict)
    return {_segments(m, "PID")[0][3].split("^")[0]: m for m in hl7.split_messages(path.read_text())}


def test_icap_table_covers_every_class_in_one_place() -> None:
    assert tuple(ICAP) == PATTERNS
    assert icap_label("speckled") == "AC-2,4,5" and icap_label("nucleolar") == "AC-8,9,10"
    assert describe("numem") == "Nuclear envelope (AC-11,12)" and icap_label("mitsp") == "AC-25"


def test_hl7_export_sends_each_review_once_as_a_valid_oru_r01(results: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultsDB(results)
    record_review(store, ReviewRequest("00001", "alice"))
    record_review(store, ReviewRequest("00002", "bob^smith", ("speckled", "nucleolar"), "positive",
                                       "mixed | two\nlines"))
    first = tmp_path / "lis-1.hl7"
    code, out, err = cli(capsys, "results", "export", str(results), "--format", "hl7", "--out", str(first))
    assert code == 0 and "2 specimen(s)" in out, err
    messages = _by_specimen(first)
    assert set(messages) == {"00001", "00002"}
    mixed = messages["00002"]
    assert _segments(mixed, "MSH")[0][8] == "ORU^R01^ORU_R01" and _segments(mixed, "MSH")[0][11] == "2.5.1"
    patterns = [obx for obx in _segments(mixed, "OBX") if obx[3].startswith("ANA-PATTERN")]
    assert [obx[5] for obx in patterns] == ["AC-2,4,5^Nuclear speckled^99ICAP^speckled^speckled^99H2E",
                                           "AC-8,9,10^Nucleolar^99ICAP^nucleolar^nucleolar^99H2E"]
    assert [obx[4] for obx in patterns] == ["1", "2"] and {obx[11] for obx in patterns} == {"F"}
    values = {obx[3].split("^")[0]: obx[5] for obx in _segments(mixed, "OBX")}
    assert values["ANA-INTENSITY"].startswith("positive^") and values["ANA-REVIEW"] == "corrected"
    assert values["ANA-REVIEWER"] == "bob\\S\\smith" and values["ANA-MODEL"].startswith("resnet18-")
    assert _segments(mixed, "NTE")[0][3] == "mixed \\F\\ two lines"

    again = tmp_path / "lis-2.hl7"
    code, out, _ = cli(capsys, "results", "export", str(results), "--format", "hl7", "--out", str(again))
    assert code == 0 and "nothing new to export" in out and not again.exists()

    record_review(store, ReviewRequest("00001", "carol", ("homogeneous",), "positive"))
    code, out, _ = cli(capsys, "results", "export", str(results), "--format", "hl7", "--out", str(again))
    corrected = _by_specimen(again)
    assert list(corrected) == ["00001"] and _segments(corrected["00001"], "OBR")[0][25] == "C"

    code, out, _ = cli(capsys, "results", "export", str(results), "--format", "hl7", "--out", str(again), "--again")
    assert code == 0 and set(_by_specimen(again)) == {"00001", "00002"}


def test_csv_export_lists_reviewed_specimens_with_icap_codes(results: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = ResultsDB(results)
    record_review(store, ReviewRequest("00003", "alice", ("centromere", "numem"), "intermediate"))
    code, out, _ = cli(capsys, "results", "export", str(results), "--format", "csv")
    assert code == 0 and "1 specimen(s)" in out
    written = next((results / "exports").glob("*.csv"))
    rows = list(csv.DictReader(io.StringIO(written.read_text())))
    assert len(rows) == 1 and rows[0]["specimen"] == "00003" and rows[0]["status"] == "corrected"
    assert rows[0]["patterns"] == "centromere;numem" and rows[0]["icap"] == "AC-3;AC-11,12"
    assert rows[0]["reviewer"] == "alice" and rows[0]["model_id"].startswith("resnet18-")
    code, out, _ = cli(capsys, "results", "export", str(results), "--format", "csv")
    assert "nothing new to export" in out
