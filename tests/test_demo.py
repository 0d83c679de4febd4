"""`hep2edge demo`: every stage end to end at a tiny size, the report page in a real browser, the CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from hep2edge.demo.config import DemoConfig
from hep2edge.demo.run import DemoResult, run_demo
from hep2edge.errors import ConfigError
from hep2edge.labels import PATTERNS
from hep2edge.runtime.sinks.files import PATTERN_RGB

# inference="field": the tiny demo runs the watch whole-field, the CLI test below the default (DemoConfig.inference),
# so both values of the demo's one inference setting go through a real watch
TINY = dict(patients=7, images_per_patient=2, size=(128, 128), tile=64, epochs=1, folds=3, calib_images=4,
            val_images=2, fresh_patients=3, fresh_images_per_patient=2, fresh_size=(200, 260), drop_interval_s=0.05,
            inference="field", progress=False)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    return run_demo(DemoConfig(out=tmp_path_factory.mktemp("demo") / "run", **TINY))  # type: ignore[arg-type]


@pytest.mark.slow
def test_every_fresh_field_gets_exactly_one_result(tiny_demo: DemoResult) -> None:
    out = tiny_demo.out
    assert not tiny_demo.outcome.missing
    assert sorted(i.name for i in tiny_demo.outcome.images) == sorted(p.name for p in (out / "fresh").glob("*_p?.tif"))
    with sqlite3.connect(out / "results" / "results.db") as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 6
        states = db.execute("SELECT state, count(*) FROM inputs GROUP BY state").fetchall()
    assert states == [("done", 6)]
    for image in tiny_demo.outcome.images:
        assert image.pattern in PATTERNS and 0.0 <= image.dice <= 1.0
        assert image.landed_to_result_ms is not None and image.landed_to_result_ms > 0
    assert len(tiny_demo.outcome.specimens) == 3 and all(s["complete"] for s in tiny_demo.outcome.specimens)


@pytest.mark.slow
def test_the_model_has_both_heads_and_every_field_gets_its_cells(tiny_demo: DemoResult) -> None:
    """Trained with --instances --pattern-map, the watch finds cells by watershed and gives each a pattern."""
    results = tiny_demo.out / "results"
    summary = json.loads((tiny_demo.out / "train" / "summary.json").read_text())
    assert "cells" in summary  # per-cell validation ran: a dense head was trained
    with sqlite3.connect(results / "results.db") as db:
        counts = dict(db.execute("SELECT stem, cell_count FROM results").fetchall())
    for image in tiny_demo.outcome.images:
        stem = Path(image.name).stem
        document = json.loads((results / f"{stem}.json").read_text())
        assert document["model"]["inference"] == "field"
        assert image.cell_method == "distance" and image.cells == document["cells"]["count"] == counts[stem]
        assert image.cells is not None and image.cells > 0
        assert sum(image.cell_patterns.values()) == image.cells and set(image.cell_patterns) <= set(PATTERNS)
        assert image.true_cells is not None and image.true_cells > 0  # from the synth's {stem}_Labels.tif
        assert image.aji is not None and 0.0 <= image.aji <= 1.0
        labels = cv2.imread(str(results / f"{stem}_instances.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(results / f"{stem}_overlay.png"), cv2.IMREAD_COLOR)
        assert labels is not None and overlay is not None
        assert labels.dtype == np.uint16 and len(np.unique(labels[labels > 0])) == image.cells
        top = max(image.cell_patterns, key=lambda name: image.cell_patterns[name])
        assert np.all(overlay[..., ::-1] == PATTERN_RGB[top], axis=-1).any(), f"{stem}: no {top} cell contour drawn"
    figures = tiny_demo.outcome.figures()
    assert figures["cells_per_field"] > 0 and 0.0 <= figures["aji"] <= 1.0
    assert all(s["most_cells"] in PATTERNS for s in tiny_demo.outcome.specimens)


@pytest.mark.slow
def test_every_stage_left_its_artefacts_and_config(tiny_demo: DemoResult) -> None:
    out = tiny_demo.out
    for relative in ("config.yaml", "data/labels.csv", "train/summary.json", "train/metrics.csv", "export/model.onnx",
                     "export/model.int8.onnx", "export/export_report.json", "results/results.csv",
                     "results/config.yaml"):
        assert (out / relative).is_file(), relative
    report = json.loads((out / "export" / "export_report.json").read_text())
    assert set(report["precisions"]) == {"fp32", "int8"}
    assert list(tiny_demo.step_seconds) == ["synth", "train", "export", "watch"]
    assert all(path.exists() for path in tiny_demo.artefacts.values())


@pytest.mark.slow
def test_report_is_one_self_contained_page(tiny_demo: DemoResult) -> None:
    page = tiny_demo.report.read_text(encoding="utf-8")
    assert page.count('src="data:image/jpeg;base64,') == 6  # one overlay per fresh field, inlined
    assert "src=\"http" not in page and "<script" not in page
    for name in ("00001_p1.tif", "Pattern confusion", "Training curves", "<svg", "int8", "Where everything is",
                 "Cells per fresh field", "each cell&#x27;s contour coloured by its pattern", "most cells", "AJI"):
        assert name in page, name
    for image in tiny_demo.outcome.images:  # its cell count, with how they were found, and per-pattern counts
        assert f"{image.cells} ({image.cell_method})" in page and f"{image.cells} cells (true" in page
        top = max(image.cell_patterns, key=lambda name: image.cell_patterns[name])
        assert f"{top} {image.cell_patterns[top]}" in page


def _browser() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no headless browser here (apt-get install chromium)")
def test_report_renders_with_its_overlays_in_a_headless_browser(tiny_demo: DemoResult, tmp_path: Path) -> None:
    """The screenshot must show the overlays: each thumbnail, at the gallery's 340 px width, is found on it."""
    shot = tmp_path / "page.png"
    command = [str(_browser()), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--screenshot={shot}", "--window-size=1200,2600", "--virtual-time-budget=5000",
               tiny_demo.report.resolve().as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    image = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (2600, 1200)
    thumbnails = sorted((tiny_demo.out / "thumbnails").glob("*.jpg"))
    assert len(thumbnails) == 6
    for path in thumbnails:
        thumb = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert thumb is not None
        shown = cv2.resize(thumb, (340, round(thumb.shape[0] * 340 / thumb.shape[1])), interpolation=cv2.INTER_AREA)
        found = float(cv2.matchTemplate(image, shown, cv2.TM_CCOEFF_NORMED).max())
        assert found > 0.8, f"{path.name} is not on the page (best match {found:.2f}): the images did not render"
    assert np.count_nonzero(image.reshape(-1, 3).std(axis=0)) == 3  # not a blank page


def test_demo_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="`patients` 3"):
        DemoConfig(patients=3)
    with pytest.raises(ConfigError, match="`epochs`"):
        DemoConfig(epochs=0)
    with pytest.raises(ConfigError, match="inference 'whole': valid modes are tiles, field"):
        DemoConfig(inference="whole")


@pytest.mark.slow
def test_demo_command_runs_and_prints_the_table(tmp_path: Path) -> None:
    """The real CLI with its own defaults except the counts: ends with the results table and the report."""
    result = subprocess.run(
        [sys.executable, "-m", "hep2edge", "demo", "--out", str(tmp_path / "d"), "--patients", "5", "--epochs", "1",
         "--fresh-patients", "1", "--drop-interval", "0", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fresh fields, as the scanner delivered them" in result.stdout
    assert "00001_p1 " in result.stdout and "homogeneous" in result.stdout and "report.html" in result.stdout
    assert (tmp_path / "d" / "report.html").is_file()


def test_a_failing_scanner_ends_the_watch_instead_of_hanging(tmp_path: Path) -> None:
    from hep2edge.demo.scanner import ScannerDrop, ScannerFedSource
    from hep2edge.runtime.sources.watch import FolderWatchSource, WatchConfig

    good = tmp_path / "a.png"
    cv2.imwrite(str(good), np.zeros((8, 8), np.uint8))
    inbox = tmp_path / "inbox"
    scanner = ScannerDrop([good, tmp_path / "missing.png", good], inbox, interval_s=0.0, start_delay_s=0.0)
    inbox.mkdir()
    source = ScannerFedSource(FolderWatchSource(WatchConfig(inbox, settle_ms=50, max_files=3)), scanner)
    emitted: list[str] = []
    thread = threading.Thread(target=source.run, args=(lambda item: emitted.append(item.name) or True,
                                                      threading.Event()))
    scanner.start()
    thread.start()
    thread.join(timeout=10)
    alive = thread.is_alive()
    scanner.stop()
    assert not alive, "the watch waited for files a failed scanner will never deliver"
    assert isinstance(scanner.error, FileNotFoundError)
