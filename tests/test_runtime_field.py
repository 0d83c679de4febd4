"""Whole-field inference (`--inference field`): the numpy reference, the pipeline path, the refusals and fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from cli_support import run_cli
from runtime_support import hep2edge, write_pngs

from hep2edge.contract import FIELD_OUTPUTS, OUTPUTS, ModelContract
from hep2edge.errors import ConfigError, ContractError
from hep2edge.export.onnx_contract import attach_contract, read_contract
from hep2edge.normalization import NormalizationSpec
from hep2edge.runtime.field import (
    check_inference_mode,
    export_field_warning,
    field_input,
    field_outputs,
    field_problem,
    pool_tiles,
    tile_cells,
)
from hep2edge.runtime.preprocess import frame_to_batch
from hep2edge.tiling import tile_grid
from hep2edge.workspace import EXPORT_REPORT_JSON

CONTRACT = ModelContract(tile=64).with_field_outputs()


def test_the_field_input_is_the_padded_image_normalised_as_tiles_are() -> None:
    gray = np.random.default_rng(0).integers(0, 256, (100, 130), dtype=np.uint8)
    field = field_input(gray, CONTRACT)
    assert field.shape == (1, 1, 128, 160) and field.dtype == np.float32
    tiles, grid = frame_to_batch(gray, CONTRACT)
    top, left = grid.positions[1]
    np.testing.assert_array_equal(field[0, 0, top : top + 64, left : left + 64], tiles[1, 0])
    assert not field[0, 0, 100:].any() and not field[0, 0, :, 130:].any()  # the pad is the zero pixel


def test_tile_cells_cover_each_tile_and_pooling_is_the_mean_over_them() -> None:
    grid = tile_grid(1040, 1388, 384)
    cells = tile_cells(grid, 32)
    assert len(cells) == len(grid) == 15
    assert cells[0] == (slice(0, 12), slice(0, 12))
    rows, cols = cells[-1]  # top 656, left 1004: cells 20..33 (1040 / 32 = 32.5 -> 33) and 31..44
    assert (rows.start, rows.stop, cols.start, cols.stop) == (20, 33, 31, 44)
    logits = np.random.default_rng(1).normal(size=(7, 33, 44))
    pooled = pool_tiles(logits, grid, 32)
    assert pooled.shape == (15, 7)
    np.testing.assert_allclose(pooled[0], logits[:, :12, :12].mean(axis=(1, 2)))


def test_field_outputs_pool_each_tile_and_crop_the_mask() -> None:
    grid = tile_grid(100, 130, 64)
    rng = np.random.default_rng(2)
    pattern = rng.normal(size=(1, 7, 4, 5))
    outputs = {"mask": rng.random((1, 1, 128, 160)).astype(np.float32), "pattern_logits": pattern,
               "intensity_logits": np.zeros((1, 1, 4, 5))}
    result = field_outputs(outputs, grid, CONTRACT)
    assert result.mask is None and result.field_mask is not None
    assert result.field_mask.shape == (100, 130)
    np.testing.assert_array_equal(result.field_mask, outputs["mask"][0, 0, :100, :130] > 0.5)
    assert result.pattern.shape == (len(grid), 7) and result.intensity.shape == (len(grid),)
    np.testing.assert_allclose(result.pattern.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(result.intensity, 0.5)  # sigmoid(0)
    first = pattern[0, :, :2, :2].mean(axis=(1, 2))
    np.testing.assert_allclose(result.pattern[0], np.exp(first) / np.exp(first).sum(), atol=1e-6)


def test_fields_smaller_than_a_tile_or_too_large_say_why_they_run_in_tiles() -> None:
    assert field_problem(1040, 1388, CONTRACT) is None
    assert "smaller than one 64 px tile" in str(field_problem(40, 1388, CONTRACT))
    assert "exceed the whole-field limit" in str(field_problem(1040, 1388, CONTRACT, max_pixels=1_000_000))


def test_unknown_modes_and_tile_only_models_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="valid modes are tiles, field"):
        check_inference_mode("whole", CONTRACT, "m.onnx")
    with pytest.raises(ConfigError, match="m.onnx has no whole-field outputs.*re-export"):
        check_inference_mode("field", ModelContract(tile=64), "m.onnx")
    check_inference_mode("tiles", ModelContract(tile=64), "m.onnx")
    minmax = ModelContract(tile=64, normalization=NormalizationSpec("minmax")).with_field_outputs()
    with pytest.raises(ConfigError, match="normalises each tile by its own range"):
        check_inference_mode("field", minmax, "m.onnx")


def test_the_contract_keeps_field_stride_and_outputs_in_step() -> None:
    assert CONTRACT.whole_field and set(CONTRACT.outputs) == set(OUTPUTS) | set(FIELD_OUTPUTS)
    assert ModelContract.from_json(CONTRACT.to_json()) == CONTRACT
    assert not ModelContract(tile=64).whole_field  # a contract from before whole-field inference
    with pytest.raises(ContractError, match="field_stride 32 does not fit the outputs"):
        ModelContract(tile=64, field_stride=32)
    with pytest.raises(ContractError, match="field_stride is 16"):
        ModelContract(tile=64, field_stride=16)


def _analyze(model: Path, images: list[Path], out: Path, *extra: str) -> dict[str, dict[str, object]]:
    result = hep2edge("analyze", *map(str, images), "--model", str(model), "--out", str(out), "--backend",
                      "onnxruntime", *extra, cwd=out.parent)
    assert result.returncode == 0, result.stderr
    return {image.stem: json.loads((out / f"{image.stem}.json").read_text()) for image in images}


def test_analyze_in_field_mode_writes_whole_masks_and_per_tile_evidence(tiny_onnx: Path, tmp_path: Path) -> None:
    images = write_pngs(tmp_path / "in", 2, shape=(150, 200))
    docs = _analyze(tiny_onnx, images, tmp_path / "field", "--inference", "field")
    tiles = _analyze(tiny_onnx, images, tmp_path / "tiles")
    for image in images:
        doc = docs[image.stem]
        assert doc["model"]["inference"] == "field" and tiles[image.stem]["model"]["inference"] == "tiles"  # type: ignore[index]
        assert len(doc["tiles"]) == len(tiles[image.stem]["tiles"]) == 15  # type: ignore[arg-type]
        mask = cv2.imread(str(tmp_path / "field" / f"{image.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (150, 200) and set(np.unique(mask)) <= {0, 255}
        assert doc["foreground_fraction"] == pytest.approx(np.count_nonzero(mask) / mask.size, abs=1e-6)
    config = (tmp_path / "field" / "config.yaml").read_text()
    assert "inference: field" in config


def test_a_field_of_one_tile_gives_exactly_the_tile_result(tiny_onnx: Path, tmp_path: Path) -> None:
    """One 64 px tile is one network pass either way: the same mask, and the pooled logit maps are the heads."""
    images = write_pngs(tmp_path / "in", 3, shape=(64, 64), seed=5)
    field = _analyze(tiny_onnx, images, tmp_path / "field", "--inference", "field")
    tiles = _analyze(tiny_onnx, images, tmp_path / "tiles")
    for image in images:
        by_field, by_tiles = field[image.stem], tiles[image.stem]
        assert by_field["model"]["inference"] == "field"  # type: ignore[index]
        masks = [cv2.imread(str(tmp_path / mode / f"{image.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
                 for mode in ("field", "tiles")]
        assert np.count_nonzero(masks[0] != masks[1]) <= 2, "only pixels at the threshold may differ"
        (one_field,), (one_tile,) = by_field["tiles"], by_tiles["tiles"]  # type: ignore[misc]
        assert one_field["pattern"] == one_tile["pattern"]
        for key in ("pattern_probability", "intensity_positive_probability"):
            assert one_field[key] == pytest.approx(one_tile[key], abs=1e-4), key
        for key in ("pattern", "intensity"):
            field_probs, tile_probs = by_field[key], by_tiles[key]
            assert field_probs["probability"] == pytest.approx(tile_probs["probability"], abs=1e-4)  # type: ignore[index]


def test_field_mode_warns_when_the_export_found_whole_fields_outside_its_limits(tiny_onnx: Path,
                                                                                tmp_path: Path) -> None:
    model = tmp_path / "export" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(tiny_onnx, model)
    verdict = {"skipped": "", "within_limits": False, "failures": ["dice drops by 0.0109 > 0.01 against tiles"]}
    (model.parent / EXPORT_REPORT_JSON).write_text(json.dumps({"whole_field": verdict}))
    images = write_pngs(tmp_path / "in", 1, shape=(70, 80))
    runs = {mode: hep2edge("analyze", str(images[0]), "--model", str(model), "--out", str(tmp_path / mode),
                           "--backend", "onnxruntime", "--inference", mode, cwd=tmp_path)
            for mode in ("field", "tiles")}
    assert runs["field"].returncode == runs["tiles"].returncode == 0
    said = runs["field"].stdout + runs["field"].stderr
    assert "outside its verification limits (dice drops by 0.0109 > 0.01 against tiles;" in said
    assert "verification limits" not in runs["tiles"].stdout + runs["tiles"].stderr
    assert export_field_warning("field", model) is not None
    (model.parent / EXPORT_REPORT_JSON).write_text(json.dumps({"whole_field": verdict | {"within_limits": True}}))
    assert export_field_warning("field", model) is None
    (model.parent / EXPORT_REPORT_JSON).write_text("{not json")
    assert export_field_warning("field", model) is None  # an unreadable report says nothing


def test_a_field_smaller_than_a_tile_runs_in_tiles_beside_whole_fields(tiny_onnx: Path, tmp_path: Path) -> None:
    small = write_pngs(tmp_path / "small", 1, shape=(40, 200), prefix="small")
    large = write_pngs(tmp_path / "large", 1, shape=(150, 200), prefix="large")
    docs = _analyze(tiny_onnx, small + large, tmp_path / "out", "--inference", "field")
    assert docs[large[0].stem]["model"]["inference"] == "field"  # type: ignore[index]
    assert docs[small[0].stem]["model"]["inference"] == "tiles"  # type: ignore[index]  # what it really got
    mask = cv2.imread(str(tmp_path / "out" / f"{small[0].stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (40, 200)


def test_a_model_without_field_outputs_is_refused_before_results_exist(tiny_onnx: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An ONNX file exported before whole-field inference (its contract has no field outputs)."""
    proto = onnx.load(str(tiny_onnx))
    contract = read_contract(proto)
    old = ModelContract.from_dict({**contract.to_dict(), "field_stride": 0, "outputs": dict(OUTPUTS)})
    attach_contract(proto, old)
    model = tmp_path / "old.onnx"
    onnx.save(proto, str(model))
    (image,) = write_pngs(tmp_path / "in", 1)
    out = tmp_path / "results"
    code = run_cli(["analyze", str(image), "--model", str(model), "--out", str(out), "--backend", "onnxruntime",
                    "--inference", "field"], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has no whole-field outputs" in err and "\n" not in err, err
    assert list(out.iterdir()) == []  # made and checked writable up front, nothing written in it
