"""`hep2edge export` end to end on the tiny model and the synthetic dataset: files, report, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import run_cli

pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx")
ort = pytest.importorskip("onnxruntime")

from hep2edge.contract import ModelContract  # noqa: E402
from hep2edge.export.verify import openvino_available  # noqa: E402


def make_data_checkpoint(tiny_checkpoint: Path, data_root: Path, dest: Path) -> Path:
    """The tiny model saved again with the `data` a training run records (patients 1-5 train, 6-7 val)."""
    from hep2edge.train.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    data = {"root": str(data_root), "manifest": str(data_root / "labels.csv"),
            "train_patients": [f"{p:05d}" for p in range(1, 6)], "val_patients": ["00006", "00007"],
            "channel_policy": "luminance"}
    save_checkpoint(dest, make_checkpoint(loaded.model, loaded.contract, fold=0, epoch=1, metrics={}, data=data))
    return dest




@pytest.fixture(scope="module")
def data_checkpoint(tiny_checkpoint: Path, synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(2)
    return make_data_checkpoint(tiny_checkpoint, synth_small, tmp_path_factory.mktemp("dc") / "best.pt")


@pytest.fixture(scope="module")
def exported(data_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """fp32 + fp16 export of the data checkpoint (verification on its held-out patients)."""
    from hep2edge.export.config import ExportConfig
    from hep2edge.export.pipeline import run_export
    from hep2edge.progress import LineReporter

    out = tmp_path_factory.mktemp("export") / "out"
    messages: list[str] = []
    report = run_export(ExportConfig(checkpoint=data_checkpoint, out=out, precisions=("fp32", "fp16"), val_images=3),
                        LineReporter(messages.append))
    return out, report


def test_files_written_with_contract_per_precision(exported: tuple[Path, Any]) -> None:
    out, _ = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "export.log", "export_report.json", "export_report.md",
                     "model.fp16.onnx", "model.onnx"]
    for name, precision in (("model.onnx", "fp32"), ("model.fp16.onnx", "fp16")):
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, name)
        assert contract.precision == precision
        assert [i.type for i in session.get_inputs()] == ["tensor(float)"]
        assert {o.type for o in session.get_outputs()} == {"tensor(float)"}


def test_report_has_diffs_and_task_metrics_per_precision(exported: tuple[Path, Any]) -> None:
    out, report = exported
    data = json.loads((out / "export_report.json").read_text())
    assert data["passed"] is True and report.passed
    assert set(data["precisions"]) == {"fp32", "fp16"}
    assert data["verification"]["tiles"] == 3 * 12  # 3 held-out images of 192 x 256 -> 3 x 4 tiles of 64
    assert "val_patients" in data["verification"]["source"]
    fp32, fp16 = data["precisions"]["fp32"], data["precisions"]["fp16"]
    assert fp32["file"] == "model.onnx" and fp16["file"] == "model.fp16.onnx"
    assert 0 < fp32["max_abs_diff"] < 1e-4 and fp32["rel_error"] < 1e-4
    assert fp16["max_abs_diff"] > fp32["max_abs_diff"]
    for entry in (fp32, fp16):
        assert set(entry["outputs"]) == {"mask", "pattern", "intensity"}
        for key in ("dice", "pattern_accuracy", "intensity_accuracy"):
            assert 0.0 <= entry[key] <= 1.0
            assert abs(entry["changes"][key] - (entry[key] - data["reference"][key])) < 1e-12
    # fp32 ONNX vs PyTorch: at most a few pixels sitting on the 0.5 threshold may flip
    assert abs(fp32["changes"]["dice"]) < 1e-3
    md = (out / "export_report.md").read_text()
    assert "| fp16 | onnxruntime | `model.fp16.onnx` |" in md and "PASSED" in md
    for entry in (fp32, fp16):  # every precision judged as OpenVINO runs it too, where installed
        assert entry["runtime"] == "onnxruntime"
        if openvino_available():
            under = entry["under"]["openvino"]
            assert under["runtime"] == "openvino" and 0.0 <= under["dice"] <= 1.0 and under["passed"]
            assert f"| {entry['precision']} | openvino | `{entry['file']}` |" in md
    assert fp32["under"].get("openvino", {}).get("rel_error", 0.0) < 1e-3
    assert "trtexec --onnx=model.fp16.onnx --stronglyTyped" in json.dumps(data["tensorrt"])


def test_report_scores_the_fp32_file_in_whole_field_mode(exported: tuple[Path, Any]) -> None:
    out, report = exported
    field = json.loads((out / "export_report.json").read_text())["whole_field"]
    assert field == json.loads(json.dumps(report.whole_field)) and field["runtime"] == "onnxruntime"
    assert not field["skipped"] and field["largest"] == [192, 256]
    assert field["images"] == 3 and 0.0 <= field["mask_dice_vs_tiles"] <= 1.0
    assert field["pattern_agreement"] in (0.0, 1 / 3, 2 / 3, 1.0)
    assert set(field["tile_metrics"]) == set(field["field_metrics"]) == {"dice", "pattern_accuracy",
                                                                         "intensity_accuracy"}
    # tile mode of the same file is what verification scored for fp32
    assert field["tile_metrics"]["dice"] == pytest.approx(report.precisions["fp32"].dice, abs=1e-9)
    assert field["within_limits"] is (not field["failures"])
    md = (out / "export_report.md").read_text()
    assert "## Whole field (`--inference field`)" in md and "| dice |" in md


def test_no_field_check_leaves_the_whole_field_section_out(data_checkpoint: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tiles-only"
    code = run_cli(["export", str(data_checkpoint), "--out", str(out), "--val-images", "1", "--no-field-check"],
                   monkeypatch)
    assert code == 0
    assert json.loads((out / "export_report.json").read_text())["whole_field"] == {}
    assert "Whole field" not in (out / "export_report.md").read_text()
    assert "field_check: false" in (out / "config.yaml").read_text()


def test_limits_exceeded_exit_nonzero_keeping_files(
    data_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "strict"
    code = run_cli(["export", str(data_checkpoint), "--out", str(out), "--val-images", "2", "--no-simplify",
                    "--max-dice-drop", "-1"], monkeypatch)
    assert code == 1
    assert "failed: fp32: dice drops by 0.0000 > -1" in capsys.readouterr().err
    data = json.loads((out / "export_report.json").read_text())
    assert data["passed"] is False and (out / "model.onnx").is_file()


@pytest.mark.slow
def test_int8_from_training_patients_bare_run(
    data_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bare `hep2edge export --precision int8`: newest run's best fold, calibrated on its training patients."""
    run = tmp_path / "runs" / "train" / "1"
    (run / "fold_0").mkdir(parents=True)
    (run / "fold_0" / "best.pt").write_bytes(data_checkpoint.read_bytes())
    (run / "summary.json").write_text(json.dumps({"monitor": "score", "monitor_mode": "max", "folds": [
        {"fold": 0, "checkpoint": "fold_0/best.pt", "metrics": {"score": 0.5}},
        {"fold": 1, "checkpoint": None, "metrics": {}}]}))
    monkeypatch.chdir(tmp_path)
    code = run_cli(["export", "--precision", "int8", "--calib-images", "4", "--calib-method", "max",
                    "--int8-high-precision", "fp32", "--val-images", "2", "--max-dice-drop", "1",
                    "--max-accuracy-drop", "1"], monkeypatch)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "fold 0 of runs/train/1 has the best score" in captured.out
    out = tmp_path / "runs" / "export" / "1"
    data = json.loads((out / "export_report.json").read_text())
    int8 = data["precisions"]["int8"]
    assert int8["notes"]["calibration_tiles"] == 4 and int8["notes"]["calibration_method"] == "max"
    assert "train_patients" in data["calibration"]["source"]
    assert int8["max_abs_diff"] > data["precisions"]["fp32"]["max_abs_diff"]
    session = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map).precision == "int8"
