"""Manifest paths stay inside the dataset folder unless `--allow-outside`; refusals never tell what exists outside."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hep2edge.cli.app import app
from hep2edge.data.manifest import OutsideError, is_inside, load_dataset, resolve_path
from hep2edge.data.validate import validate_dataset
from hep2edge.errors import DataError
from hep2edge.imageio import write_image_tiff

OUTSIDE_MESSAGE = "lies outside the dataset folder {root}; `allow_outside` permits it"


def _image(path: Path) -> None:
    write_image_tiff(path, np.full((8, 10), 40, np.uint8))
    write_image_tiff(path.with_name(f"{path.stem}_Mask.tif"), np.full((8, 10), 255, np.uint8))


def _escaping_dataset(tmp_path: Path, outside_exists: bool) -> tuple[Path, Path]:
    """data/ with a good row, then `../outside.tif`, its absolute path, and a symlink inside pointing to it."""
    root, outside = tmp_path / "data", tmp_path / "outside.tif"
    root.mkdir(parents=True)
    _image(root / "00001_p1.tif")
    if outside_exists:
        _image(outside)
    (root / "link.tif").symlink_to(outside)
    rows = ["image,mask,pattern,intensity", "00001_p1.tif,00001_p1_Mask.tif,golgi,positive",
            "../outside.tif,,golgi,positive", f"{outside},,golgi,positive", "link.tif,,golgi,positive"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, outside


def _expected(root: Path, outside: Path) -> list[str]:
    message = OUTSIDE_MESSAGE.format(root=root)
    manifest = root / "labels.csv"
    return [f"{manifest}:3: image ../outside.tif {message}", f"{manifest}:4: image {outside} {message}",
            f"{manifest}:5: image link.tif {message}"]


@pytest.mark.parametrize("decode", [True, False])
def test_check_refuses_paths_outside_one_line_per_row_in_line_order(tmp_path: Path, decode: bool) -> None:
    root, outside = _escaping_dataset(tmp_path, outside_exists=True)
    report = validate_dataset(root, check_images=decode)
    assert report.lines() == _expected(root, outside)
    assert [r.line for r in report.records] == [2]


def test_hep2edge_check_names_the_flags(tmp_path: Path) -> None:
    root, outside = _escaping_dataset(tmp_path, outside_exists=True)
    result = CliRunner().invoke(app, ["check", str(root), "--max-problems", "2"])
    assert result.exit_code == 1
    lines = [line.replace("`allow_outside`", "--allow-outside") for line in _expected(root, outside)][:2]
    assert result.stdout.splitlines()[:3] == [*lines, "... stopped after 2 problems (raise --max-problems to see more)"]


def test_refusal_is_the_same_whether_the_outside_file_exists(tmp_path: Path) -> None:
    present_root, present = _escaping_dataset(tmp_path / "a", outside_exists=True)
    missing_root, missing = _escaping_dataset(tmp_path / "b", outside_exists=False)
    assert present.is_file() and not missing.exists()
    present_lines = [line.replace(str(tmp_path / "a"), "X") for line in validate_dataset(present_root).lines()]
    missing_lines = [line.replace(str(tmp_path / "b"), "X") for line in validate_dataset(missing_root).lines()]
    assert present_lines == missing_lines and len(present_lines) == 3


def test_outside_files_are_never_stat_or_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = _escaping_dataset(tmp_path, outside_exists=True)
    (root / "labels.csv").write_text((root / "labels.csv").read_text() + "../../../../etc/passwd,,golgi,positive\n"
                                     "/proc/self/environ,,golgi,positive\n")
    touched: list[str] = []
    real_stat, real_open = os.stat, builtins.open

    def stat(path: str | os.PathLike[str], *args: object, **kwargs: object) -> os.stat_result:
        touched.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    def open_(file: object, *args: object, **kwargs: object) -> object:
        touched.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else "")
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(builtins, "open", open_)
    report = validate_dataset(root)
    monkeypatch.undo()
    assert len(report.problems) == 5
    assert any(p.endswith("00001_p1.tif") for p in touched)  # the inside image was read
    outside_touched = [p for p in touched if p and not is_inside(root, Path(p))]
    assert outside_touched == [], outside_touched


def test_allow_outside_accepts_the_real_outside_image(tmp_path: Path) -> None:
    root, outside = _escaping_dataset(tmp_path, outside_exists=True)
    (root / "labels.csv").write_text("image,mask,pattern,intensity\n00001_p1.tif,,golgi,positive\n"
                                     "../outside.tif,,golgi,positive\n")
    report = validate_dataset(root, allow_outside=True)
    assert report.ok, report.lines()
    assert report.records[1].image == root / ".." / "outside.tif"
    assert report.records[1].mask == root / ".." / "outside_Mask.tif"
    assert len(load_dataset(root, allow_outside=True)) == 2
    with pytest.raises(DataError, match=r"labels.csv:3: image \.\./outside.tif lies outside"):
        load_dataset(root)


def test_mask_cell_and_inferred_mask_are_contained(tmp_path: Path) -> None:
    root, outside = _escaping_dataset(tmp_path, outside_exists=True)
    _image(root / "00002_p1.tif")
    (root / "00002_p1_Mask.tif").unlink()
    (root / "00002_p1_Mask.tif").symlink_to(tmp_path / "outside_Mask.tif")
    (root / "labels.csv").write_text("image,mask,pattern,intensity\n00001_p1.tif,../outside_Mask.tif,golgi,positive\n"
                                     "00002_p1.tif,,golgi,positive\n")
    message = OUTSIDE_MESSAGE.format(root=root)
    assert validate_dataset(root).lines() == [f"{root / 'labels.csv'}:2: mask ../outside_Mask.tif {message}",
                                              f"{root / 'labels.csv'}:3: mask 00002_p1_Mask.tif {message}"]


def test_inside_paths_still_resolve_through_a_symlinked_root_and_bare_names(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    _image(real / "images" / "00001_p1.tif")
    _image(real / "00002_p1.tif")
    (real / "labels.csv").write_text("image,pattern,intensity\nimages/../images/00001_p1.tif,golgi,positive\n"
                                     "elsewhere/00002_p1.tif,golgi,positive\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    for root in (real, link):
        assert validate_dataset(root).ok, validate_dataset(root).lines()
    assert load_dataset(link).records[1].image == link / "00002_p1.tif"  # the bare-name fallback, inside


def test_resolve_path_and_is_inside(tmp_path: Path) -> None:
    assert is_inside(tmp_path, tmp_path / "a" / ".." / "b.tif")
    assert not is_inside(tmp_path, tmp_path / ".." / "b.tif")
    assert not is_inside(tmp_path / "data", tmp_path / "data2" / "x.tif")  # a prefix is not a parent
    with pytest.raises(OutsideError, match=r"^\.\./x.tif lies outside"):
        resolve_path(tmp_path, "../x.tif")
    with pytest.raises(OutsideError, match=r"^'/\\x1b\[2J/x.tif' lies outside"):  # control characters escaped
        resolve_path(tmp_path, "/\x1b[2J/x.tif")
    assert resolve_path(tmp_path, "../x.tif", allow_outside=True) == tmp_path / ".." / "x.tif"


def test_check_cli_refuses_and_allow_outside_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    outputs = []
    for name, exists in (("a", True), ("b", False)):
        root, outside = _escaping_dataset(tmp_path / name, outside_exists=exists)
        result = runner.invoke(app, ["check", str(root)])
        assert result.exit_code == 1
        shown = [line.replace("`allow_outside`", "--allow-outside") for line in _expected(root, outside)]
        assert [line for line in result.stdout.splitlines() if "labels.csv:" in line] == shown
        outputs.append(result.stdout.replace(str(tmp_path / name), "X"))
    assert outputs[0] == outputs[1]
    root = tmp_path / "a" / "data"
    (root / "labels.csv").write_text("image,pattern,intensity\n00001_p1.tif,golgi,positive\n"
                                     "../outside.tif,golgi,positive\n")
    result = runner.invoke(app, ["check", str(root), "--allow-outside"])
    assert result.exit_code == 0, result.output
    assert "2 images, no problems" in result.stdout


def test_allow_outside_from_hep2edge_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = _escaping_dataset(tmp_path, outside_exists=True)
    (root / "labels.csv").write_text("image,pattern,intensity\n../outside.tif,golgi,positive\n")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["check", str(root)]).exit_code == 1
    (tmp_path / "hep2edge.yaml").write_text("check:\n  allow-outside: true\n")
    result = CliRunner().invoke(app, ["check", str(root)])
    assert result.exit_code == 0, result.output
