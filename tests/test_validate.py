"""`validate_dataset` and `hep2edge check`: every problem at once, with file and line; summary; exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_manifest import header_csv, make_images
from typer.testing import CliRunner

from hep2edge.cli.app import app
from hep2edge.data.validate import Problem, validate_dataset
from hep2edge.imageio import write_image_tiff


def _broken_dataset(root: Path) -> Path:
    """A dataset with one problem of each kind, on known lines."""
    make_images(root, {1: ("homogeneous", "positive"), 2: ("speckled", "positive"), 3: ("golgi", "positive"),
                       4: ("numem", "intermediate"), 5: ("mitsp", "positive")})
    (root / "00002_p1.tif").write_bytes((root / "00002_p1.tif").read_bytes()[:100])  # truncated
    write_image_tiff(root / "00002_p2_Mask.tif", np.zeros((5, 5), np.uint8))  # wrong size
    (root / "00003_p2_Mask.tif").unlink()  # missing mask
    (root / "00005_p1.tif").unlink()  # missing image
    rows = [
        "image,mask,patient,pattern,intensity",  # 1
        "00001_p1.tif,00001_p1_Mask.tif,00001,homogeneous,positive",  # 2 fine
        "00001_p2.tif,00001_p2_Mask.tif,00001,speckled,positive",  # 3 patient disagrees
        "00002_p1.tif,00002_p1_Mask.tif,00002,speckled,positive",  # 4 truncated image
        "00002_p2.tif,00002_p2_Mask.tif,00002,speckled,positive",  # 5 mask size
        "00003_p1.tif,00003_p1_Mask.tif,00003,golgi,positve",  # 6 unknown intensity
        "00003_p2.tif,00003_p2_Mask.tif,00003,golgi,positive",  # 7 missing mask
        "00004_p1.tif,00004_p1_Mask.tif",  # 8 malformed
        "00004_p2.tif,00004_p2_Mask.tif,00004,numem,intermediate",  # 9 fine
        "00005_p1.tif,00005_p1_Mask.tif,00005,mitsp,positive",  # 10 missing image
        "00004_p2.tif,00004_p2_Mask.tif,00004,numem,intermediate",  # 11 duplicate of 9
    ]
    manifest = root / "labels.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


EXPECTED = {
    3: "patient 00001: pattern speckled here but homogeneous on line 2",
    4: "truncated TIFF",
    5: "mask 00002_p2_Mask.tif is 5 x 5 but its image is 10 x 8",
    6: "unknown intensity label 'positve'",
    7: "mask 00003_p2_Mask.tif not found",
    8: "malformed row: 2 column(s)",
    10: "image 00005_p1.tif not found",
    11: "duplicate row: 00004_p2.tif already on line 9",
}


def test_every_problem_reported_at_once_with_file_and_line(tmp_path: Path) -> None:
    manifest = _broken_dataset(tmp_path)
    report = validate_dataset(tmp_path)
    assert not report.ok
    by_line = {p.line or 0: p for p in report.problems}
    assert sorted(by_line) == sorted(EXPECTED)
    for line, text in EXPECTED.items():
        assert by_line[line].file == str(manifest)
        assert text in by_line[line].message, by_line[line].message
    assert str(tmp_path / "00002_p1.tif") in by_line[4].message  # the unreadable file is named
    assert report.lines()[0].startswith(f"{manifest}:")


def test_no_decode_skips_image_checks(tmp_path: Path) -> None:
    _broken_dataset(tmp_path)
    lines = {p.line for p in validate_dataset(tmp_path, check_images=False).problems}
    assert lines == set(EXPECTED) - {4, 5}


def test_problem_limit(tmp_path: Path) -> None:
    _broken_dataset(tmp_path)
    report = validate_dataset(tmp_path, max_problems=3)
    assert len(report.problems) == 3 and report.truncated
    assert "stopped after 3 problems" in report.lines()[-1]


def test_intensity_disagreement(tmp_path: Path) -> None:
    header_csv(tmp_path)
    text = (tmp_path / "labels.csv").read_text().splitlines()
    text[2] = text[2].replace("intermediate", "positive")
    (tmp_path / "labels.csv").write_text("\n".join(text) + "\n")
    (problem,) = validate_dataset(tmp_path).problems
    assert problem.line == 3 and "intensity positive here but intermediate on line 2" in problem.message


@pytest.mark.parametrize("setup, message", [
    ("missing", "dataset folder not found"),
    ("empty", "folder is empty"),
    ("no_csv", "no manifest CSV"),
    ("no_rows", "manifest has no rows"),
    ("bad_header", "header lacks column(s): intensity"),
    ("binary", "not a UTF-8 text CSV"),
])
def test_folder_level_problems(tmp_path: Path, setup: str, message: str) -> None:
    root = tmp_path / "d"
    if setup != "missing":
        root.mkdir()
    if setup == "no_csv":
        (root / "a.tif").write_bytes(b"x")
    if setup == "no_rows":
        (root / "labels.csv").write_text("\n\n")
    if setup == "binary":
        (root / "labels.csv").write_bytes(b"\xff\xfe\x00image\x9c")
    if setup == "bad_header":
        (root / "labels.csv").write_text("image,mask,pattern\na.tif,b.tif,golgi\n")
    report = validate_dataset(root)
    assert len(report.problems) == 1 and message in report.problems[0].message
    assert report.problems[0].file.startswith(str(root))


def test_summary(tmp_path: Path) -> None:
    header_csv(tmp_path)
    report = validate_dataset(tmp_path)
    assert report.ok, report.lines()
    summary = report.summary()
    assert (summary["patients"], summary["images"], summary["problems"]) == (3, 6, 0)
    assert summary["patterns"]["speckled"] == {"patients": 1, "images": 2}
    assert summary["patterns"]["golgi"] == {"patients": 0, "images": 0}
    assert summary["intensities"]["positive"] == {"patients": 2, "images": 4}
    assert report.dataset().patients() == ["00001", "00002", "00003"]


def test_problem_format() -> None:
    assert str(Problem("a.csv", 3, "bad")) == "a.csv:3: bad"
    assert str(Problem("d", None, "empty")) == "d: empty"


def test_check_cli_clean_and_broken(tmp_path: Path) -> None:
    runner = CliRunner()
    clean = tmp_path / "clean"
    clean.mkdir()
    header_csv(clean)
    result = runner.invoke(app, ["check", str(clean)])
    assert result.exit_code == 0, result.output
    assert "3 patients, 6 images" in result.output and "speckled" in result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = _broken_dataset(broken)
    result = runner.invoke(app, ["check", str(broken), "--max-problems", "20"])
    assert result.exit_code == 1
    for line, text in EXPECTED.items():
        assert f"{manifest}:{line}: " in result.output and text in result.output


def test_check_subprocess_has_no_traceback(tmp_path: Path) -> None:
    _broken_dataset(tmp_path)
    result = subprocess.run([sys.executable, "-m", "hep2edge", "check", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert len([line for line in result.stdout.splitlines() if "labels.csv:" in line]) == len(EXPECTED)
    missing = subprocess.run([sys.executable, "-m", "hep2edge", "check", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "dataset folder not found" in missing.stdout
    assert "Traceback" not in missing.stderr


def test_an_image_without_any_mask_is_a_problem(tmp_path: Path) -> None:
    """An empty mask cell falls back to `{stem}_Mask.tif`; when that is missing too, check says so."""
    header_csv(tmp_path)
    text = (tmp_path / "labels.csv").read_text().replace("00002_p1_Mask.tif", "")
    (tmp_path / "labels.csv").write_text(text)
    (tmp_path / "00002_p1_Mask.tif").unlink()
    for decode in (True, False):
        (problem,) = validate_dataset(tmp_path, check_images=decode).problems
        assert problem.line == 4 and "image 00002_p1.tif has no mask" in problem.message
        assert "00002_p1_Mask.tif" in problem.message


def test_mixed_bit_depth_is_a_problem_naming_both_lines(tmp_path: Path) -> None:
    header_csv(tmp_path)
    write_image_tiff(tmp_path / "00002_p2.tif", np.full((8, 10), 1000, np.uint16))
    (problem,) = validate_dataset(tmp_path).problems
    assert problem.line == 5
    assert "00002_p2.tif is 16-bit but the image on line 2 is 8-bit" in problem.message
