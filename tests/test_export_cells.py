"""Export verification of the per-cell heads (issue 12): AJI, PQ, F1 and pattern-map mIoU per precision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import run_cli

pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx")
pytest.importorskip("onnxruntime")

TINY_ENCODER, TINY_DECODER, TINY_TILE = "resnet18", (32, 16, 16, 8, 8), 64  # as tests/conftest.py
CELLS = ("aji", "pq", "f1", "miou")


@pytest.fixture(scope="module")
def headed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a distance and a pattern-map head, saved as a hep2edge checkpoint (tile 64)."""
    import torch

    from hep2edge.contract import ModelContract
    from hep2edge.train.checkpoint import make_checkpoint, save_checkpoint
    from hep2edge.train.model import ModelConfig, build_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=TINY_ENCODER, decoder_channels=TINY_DECODER, dropout=0.0,
                                    distance=True, pattern_map=True))
    path = tmp_path_factory.mktemp("headed") / "headed.pt"
    save_checkpoint(path, make_checkpoint(model.eval(), ModelContract(tile=TINY_TILE, encoder=TINY_ENCODER),
                                          fold=0, epoch=0, metrics={}))
    return path


@pytest.fixture(scope="module")
def headed_export(headed_checkpoint: Path, synth_small: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """fp32 export of the headed checkpoint, verified on 2 synthetic images (their _Labels.tif as truth)."""
    from hep2edge.export.config import ExportConfig
    from hep2edge.export.pipeline import run_export

    out = tmp_path_factory.mktemp("export") / "out"
    report = run_export(ExportConfig(checkpoint=headed_checkpoint, out=out, val_data=synth_small, val_images=2,
                                     simplify=False))
    return out, report




def test_headed_fp32_export_passes_with_cell_metrics(headed_export: tuple[Path, Any]) -> None:
    out, report = headed_export
    data = json.loads((out / "export_report.json").read_text())
    assert data["passed"] is True and report.passed, data["failures"]
    assert data["limits"]["aji_drop"] == 0.02 and data["limits"]["miou_drop"] == 0.02
    fp32 = data["precisions"]["fp32"]
    assert set(fp32["outputs"]) == {"mask", "pattern", "intensity", "distance", "pattern_map"}
    assert fp32["rel_error"] < 1e-4
    figures = [fp32, *fp32["under"].values()]  # ONNX Runtime, and OpenVINO where installed
    for entry in figures:
        for name in CELLS:
            assert 0.0 <= entry[name] <= 1.0 and 0.0 <= data["reference"][name] <= 1.0
            assert abs(entry["changes"][name] - (entry[name] - data["reference"][name])) < 1e-12
        assert abs(entry["changes"]["aji"]) < 0.02 and abs(entry["changes"]["miou"]) < 0.02
        assert "cells" not in entry
    md = (out / "export_report.md").read_text()
    assert "| AJI (Δ) | PQ (Δ) | cell F1 (Δ) | mIoU (Δ) | ok |" in md and "PASSED" in md
    assert f"AJI {data['reference']['aji']:.4f}" in md


def test_headed_tiles_match_training_targets(headed_checkpoint: Path, synth_small: Path, tmp_path: Path) -> None:
    """Truth cells and classes are the training loader's, from labels or (without them) mask components."""
    from hep2edge.data.combined import patient_key
    from hep2edge.export.tiles import DataSelection, load_records, verification_tiles
    from hep2edge.train.checkpoint import load_checkpoint
    from hep2edge.train.targets import DenseNeeds
    from hep2edge.train.tiles_dataset import build_tile_set

    contract = load_checkpoint(headed_checkpoint).contract
    unlabelled = tmp_path / "data"
    shutil.copytree(synth_small, unlabelled, ignore=shutil.ignore_patterns("*_Labels.tif"))
    for root in (synth_small, unlabelled):
        selection = DataSelection(root, frozenset({patient_key("00006")}), "test")
        tiles = verification_tiles(selection, contract, 1, 0)
        assert tiles.instances is not None and tiles.classes is not None
        record = next(r for r in load_records(selection) if str(r.image) == tiles.image_ids[0])
        assert (getattr(record, "labels", None) is None) == (root == unlabelled)
        train = build_tile_set([record], TINY_TILE, dense=DenseNeeds(pattern_map=True))
        assert train.instances is not None and train.classes is not None
        np.testing.assert_array_equal(tiles.instances, train.instances)
        np.testing.assert_array_equal(tiles.classes, train.classes)
        assert tiles.instances.max() > 0


def test_cell_limit_breach_fails_the_export(
    headed_checkpoint: Path, synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "strict"
    code = run_cli(["export", str(headed_checkpoint), "--out", str(out), "--val-data", str(synth_small),
                    "--val-images", "1", "--no-simplify", "--max-aji-drop", "-1", "--max-miou-drop", "-0.5"],
                   monkeypatch)
    err = capsys.readouterr().err
    assert code == 1
    assert "failed: fp32: aji drops by 0.0000 > -1" in err and "failed: fp32: miou drops by 0.0000 > -0.5" in err
    data = json.loads((out / "export_report.json").read_text())
    assert data["passed"] is False and data["limits"]["aji_drop"] == -1.0
    assert any("aji drops" in line for line in data["failures"])


def test_model_without_heads_has_no_cell_metrics(tiny_checkpoint: Path, synth_small: Path, tmp_path: Path) -> None:
    from hep2edge.export.config import ExportConfig
    from hep2edge.export.pipeline import run_export

    report = run_export(ExportConfig(checkpoint=tiny_checkpoint, out=tmp_path / "out", val_data=synth_small,
                                     val_images=1, simplify=False))
    data = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report.passed and set(data["limits"]) == {"fp32_rel_error", "dice_drop", "accuracy_drop"}
    assert set(data["reference"]) == {"dice", "pattern_accuracy", "intensity_accuracy"}
    for entry in (data["precisions"]["fp32"], *data["precisions"]["fp32"]["under"].values()):
        assert not set(CELLS) & (set(entry) | set(entry["changes"])) and "cells" not in entry
        assert set(entry["outputs"]) == {"mask", "pattern", "intensity"}
    md = (tmp_path / "out" / "export_report.md").read_text()
    assert "AJI" not in md and "| intensity acc (Δ) | ok |" in md


def test_output_diffs_need_the_dense_heads() -> None:
    from hep2edge.export.verify import output_diffs

    reference = {"mask": np.zeros((1, 1, 4, 4)), "pattern": np.zeros((1, 7)), "intensity": np.zeros((1, 1)),
                 "distance": np.zeros((1, 1, 4, 4))}
    assert set(output_diffs(reference, reference)) == {"mask", "pattern", "intensity", "distance"}
    with pytest.raises(ValueError, match="distance"):
        output_diffs(reference, {k: v for k, v in reference.items() if k != "distance"})
