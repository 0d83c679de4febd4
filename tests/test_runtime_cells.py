"""Per-cell analysis in the runtime: the method a model and `--cells` give, the writers' cell step, the result
document, results.csv, the instance PNG, the specimen vote over cells, and the refusals."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from cli_support import run_cli
from runtime_support import hep2edge, write_pngs

from hep2edge.cell_kernels import cell_kernels
from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.instances import InstanceParams, distance_target
from hep2edge.labels import PATTERNS
from hep2edge.runtime.cells import analyse_cells, cell_method, stitch_dense, to_u8
from hep2edge.runtime.settings import StageConfig
from hep2edge.runtime.specimens import cell_shares, specimen_verdict
from hep2edge.tiling import tile_grid

TILES_ONLY = ModelContract(tile=64)
WITH_HEADS = TILES_ONLY.with_cell_outputs(("distance", "pattern_map"))


def test_the_cell_method_follows_the_option_and_the_model() -> None:
    assert cell_method("auto", WITH_HEADS, "m") == "distance"
    assert cell_method("auto", TILES_ONLY, "m") is None  # a model without the heads keeps working as before
    assert cell_method("components", TILES_ONLY, "m") == "components"
    assert cell_method("off", WITH_HEADS, "m") is None
    with pytest.raises(ConfigError, match="`cells` distance: m.onnx has no distance head"):
        cell_method("distance", TILES_ONLY, "m.onnx")
    with pytest.raises(ConfigError, match="valid modes are auto, distance, components, off"):
        cell_method("all", WITH_HEADS, "m")
    with pytest.raises(ConfigError, match="`cell_kernels` cuda: valid kernels are auto, numba, numpy"):
        StageConfig(cell_kernels="cuda")


def test_uint8_maps_round_and_stitch_from_the_inner_part_of_each_tile() -> None:
    np.testing.assert_array_equal(to_u8(np.array([0.0, 0.5, 1.0, 1.7, -1.0])), [0, 128, 255, 255, 0])
    grid = tile_grid(64, 96, 64)  # two tiles overlapping on columns 32..63
    tiles = np.zeros((2, 1, 64, 64), np.uint8)
    tiles[0] = 100
    tiles[1] = 200
    stitched = stitch_dense(tiles, grid)
    assert stitched.shape == (1, 64, 96)
    assert stitched.dtype == np.uint8  # the overlap is split at its middle, column 48
    assert stitched[0, 0, 0] == 100 and stitched[0, 0, 47] == 100 and stitched[0, 0, 48] == 200
    assert stitched[0, 0, 95] == 200


def _two_touching_cells() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((40, 60), np.int32)
    labels[5:35, 5:30] = 1
    labels[5:35, 30:55] = 2  # shares a border with cell 1: one blob in the mask
    return labels, (labels > 0).astype(np.uint8) * 255


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_the_distance_head_splits_touching_cells_the_mask_alone_does_not(name: str) -> None:
    labels, mask = _two_touching_cells()
    gray = np.full(labels.shape, 90, np.uint8)
    pattern_map = np.zeros((8, *labels.shape), np.uint8)
    pattern_map[1 + PATTERNS.index("speckled")] = 230
    dense = {"distance": to_u8(distance_target(labels))[None], "pattern_map": pattern_map}
    split = analyse_cells("distance", mask, dense, gray, InstanceParams(), cell_kernels(name))
    merged = analyse_cells("components", mask, {}, gray, InstanceParams(), cell_kernels(name))
    assert len(split.records) == 2 and len(merged.records) == 1
    section = split.section(with_patterns=True)
    assert section["count"] == 2 and section["method"] == "distance" and section["kernels"] == name
    assert section["patterns"]["speckled"] == 2 and sum(section["patterns"].values()) == 2
    first = section["items"][0]
    assert set(first) >= {"id", "centroid", "area", "bbox", "pattern", "pattern_probability", "mean_intensity"}
    assert first["pattern"] == "speckled" and first["mean_intensity"] == 90.0
    assert "patterns" not in merged.section(with_patterns=False)


def test_the_specimen_takes_the_pattern_most_cells_carry() -> None:
    rows = [("homogeneous", "positive", [0.6, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05], 0.9)] * 2
    counts = [json.dumps({"homogeneous": 3, "speckled": 10}), json.dumps({"speckled": 5}), None]
    shares = cell_shares(counts)
    assert shares is not None and shares[PATTERNS.index("speckled")] == pytest.approx(15 / 18)
    verdict = specimen_verdict(rows, "cells", shares)
    assert verdict["pattern"] == "speckled" and verdict["pattern_probability"] == pytest.approx(15 / 18, abs=1e-6)
    assert verdict["intensity"] == "positive"
    assert specimen_verdict(rows, "cells", None)["pattern"] == "homogeneous"  # no cells: the images vote
    assert cell_shares([None, json.dumps({})]) is None


def test_a_journal_of_schema_2_gains_the_cell_columns(tmp_path: Path) -> None:
    from hep2edge.runtime.journal import RESULT_COLUMNS, Journal

    old = [c for c in RESULT_COLUMNS if c not in ("cell_count", "cell_patterns")]
    db = sqlite3.connect(tmp_path / "results.db")
    db.execute(f"CREATE TABLE results ({', '.join(old)})")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    journal = Journal(tmp_path, {"command": "test"})
    try:
        columns = {row[1] for row in journal.query("PRAGMA table_info(results)")}
        assert {"cell_count", "cell_patterns"} <= columns
    finally:
        journal.close()


@pytest.fixture(scope="module")
def cells_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model with both per-cell heads, exported to ONNX."""
    import torch

    from hep2edge.export.onnx_export import export_fp32_onnx
    from hep2edge.train.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8), dropout=0.0,
                                    distance=True, pattern_map=True)).eval()
    path = tmp_path_factory.mktemp("cells") / "model.onnx"
    export_fp32_onnx(model, ModelContract(tile=64, encoder="resnet18"), path)
    return path


@pytest.mark.parametrize(("inference", "kernels"), [("tiles", "auto"), ("field", "numpy")])
def test_analyze_writes_cells_counts_and_instance_labels(cells_onnx: Path, tmp_path: Path, inference: str,
                                                         kernels: str) -> None:
    images = write_pngs(tmp_path / "in", 2, shape=(96, 128), prefix="00001_p")
    out = tmp_path / "results"
    result = hep2edge("analyze", *map(str, images), "--model", str(cells_onnx), "--out", str(out), "--backend",
                      "onnxruntime", "--inference", inference, "--instance-labels", "--overlay",
                      "--specimen-method", "cells", "--cell-kernels", kernels, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / f"{images[0].stem}.json").read_text())
    cells = doc["cells"]
    assert cells["method"] == "distance" and cells["count"] == len(cells["items"])
    assert cells["kernels"] == ("numba" if kernels == "auto" else kernels)  # auto: numba is installed here
    assert yaml.safe_load((out / "config.yaml").read_text())["stage"]["cell_kernels"] == kernels
    assert set(cells["patterns"]) == set(PATTERNS) and sum(cells["patterns"].values()) == cells["count"]
    labels = cv2.imread(str(out / f"{images[0].stem}_instances.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (96, 128)
    assert len(np.unique(labels[labels > 0])) == cells["count"]
    for item in cells["items"]:
        assert {"id", "centroid", "area", "pattern"} <= set(item) and item["area"] == np.count_nonzero(
            labels == item["id"])
    with (out / "results.csv").open() as handle:
        rows = {row["stem"]: row for row in csv.DictReader(handle)}
    assert int(rows[images[0].stem]["cell_count"]) == cells["count"]
    with (out / "specimens.csv").open() as handle:
        (specimen,) = list(csv.DictReader(handle))
    assert specimen["method"] == "cells"


def test_per_cell_output_from_a_model_without_the_head_is_one_line(tiny_onnx: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (image,) = write_pngs(tmp_path / "in", 1, shape=(64, 64))
    out = tmp_path / "results"
    code = run_cli(["analyze", str(image), "--model", str(tiny_onnx), "--out", str(out), "--backend", "onnxruntime",
                    "--cells", "distance"], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has no distance head" in err and "\n" not in err, err
    assert list(out.iterdir()) == []  # made and checked writable up front, nothing written in it
