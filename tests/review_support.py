"""Fixtures for the review tests (no tests here): a RESULTS folder made by the real `hep2edge analyze`.

Synthetic I3A fields: specimens 00001-00003 complete (4 fields each), 00004 with 3 of 4 fields (incomplete),
one lone field `slide_a.tif` (no specimen in its name); `more/` holds specimen 00005, for live updates.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from runtime_support import hep2edge

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FIELD = re.compile(r'name="(base|verdict_at)" value="([^"]*)"')


def _inputs(root: Path) -> tuple[Path, Path]:
    from hep2edge.synth.writer import SynthConfig, synthesize_dataset

    data = synthesize_dataset(SynthConfig(out=root / "synth", patients=5, images_per_patient=4, size=(160, 200),
                                          seed=3))
    inbox, more = root / "inbox", root / "more"
    inbox.mkdir()
    more.mkdir()
    for image in sorted(data.glob("0000?_p?.tif")):
        target = more if image.name.startswith("00005") else inbox
        shutil.copy(image, target / ("slide_a.tif" if image.name == "00004_p4.tif" else image.name))
    return inbox, more


_MADE: dict[Path, tuple[Path, Path, Path]] = {}  # a fixture imported into several modules runs once per module


@pytest.fixture(scope="session", name="review_template")
def review_template_fixture(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(RESULTS made once by `hep2edge analyze --overlay`, the model, the folder with specimen 00005)."""
    if tiny_onnx not in _MADE:
        _MADE[tiny_onnx] = _make(tiny_onnx, tmp_path_factory)
    return _MADE[tiny_onnx]


def _make(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("review")
    inbox, more = _inputs(root)
    out = root / "R"
    result = hep2edge("analyze", str(inbox), "--model", str(tiny_onnx), "--out", str(out), "--overlay", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return out, tiny_onnx, more


@pytest.fixture(name="results")
def results_fixture(review_template: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    """A fresh copy of the RESULTS folder for one test."""
    return Path(shutil.copytree(review_template[0], tmp_path / "R"))


def analyze_more(review_template: tuple[Path, Path, Path], results: Path) -> None:
    """Add specimen 00005 to `results` through the real pipeline, as a watcher would."""
    _, model, more = review_template
    result = hep2edge("analyze", str(more), "--model", str(model), "--out", str(results), cwd=results.parent)
    assert result.returncode == 0, result.stderr[-2000:]


def reviews(results: Path) -> list[tuple[str, str, str, str]]:
    """(specimen, reviewer, action, after JSON) of every review, oldest first; [] before the first."""
    with sqlite3.connect(results / "results.db") as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviews'").fetchone():
            return []
        return list(db.execute("SELECT specimen, reviewer, action, after FROM reviews ORDER BY id"))


def form_fields(html: str) -> dict[str, str]:
    """The hidden fields of a specimen page's review form."""
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return {"csrf": match.group(1), **dict(FIELD.findall(html))}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime_ns) of every file in a folder tree (results.db checked by content elsewhere)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
