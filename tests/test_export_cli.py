"""Bad input to `hep2edge export` / `build-engine`: one clear line each, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_cli

pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx")




@pytest.fixture(scope="module")
def data_checkpoint(tiny_checkpoint: Path, synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hep2edge.train.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    data = {"root": str(synth_small), "train_patients": ["00001", "00002"], "val_patients": ["00006"]}
    path = tmp_path_factory.mktemp("dc") / "best.pt"
    save_checkpoint(path, make_checkpoint(loaded.model, loaded.contract, fold=0, data=data))
    return path


def _fails_with(args: list[str], expected: str, out: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli([*args, "--out", str(out)], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert expected in err, err
    assert not out.exists() or not any(out.iterdir())


def test_not_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights")
    _fails_with(["export", str(text)], "notes.pt: not a readable checkpoint", tmp_path / "o", monkeypatch, capsys)
    _fails_with(["export", str(tmp_path / "missing.pt")], "missing.pt: no such checkpoint file", tmp_path / "o",
                monkeypatch, capsys)


def test_truncated_checkpoint(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.pt"
    data = tiny_checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _fails_with(["export", str(cut)], "cut.pt: not a readable checkpoint (truncated", tmp_path / "o",
                monkeypatch, capsys)


def test_checkpoint_of_another_architecture(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    data = torch.load(tiny_checkpoint, weights_only=True)
    data["model"]["encoder"] = "resnet34"
    other = tmp_path / "other.pt"
    torch.save(data, other)
    _fails_with(["export", str(other)], "other.pt: weights do not fit architecture resnet34", tmp_path / "o",
                monkeypatch, capsys)
    plain = tmp_path / "plain.pt"
    torch.save(data["state_dict"], plain)
    _fails_with(["export", str(plain)], "plain.pt: not a hep2edge checkpoint", tmp_path / "o", monkeypatch, capsys)


def test_unwritable_output_folder(data_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = run_cli(["export", str(data_checkpoint), "--val-images", "1", "--out", str(blocker / "out")], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "a-file/out: cannot create output folder" in err and "\n" not in err


def test_calibration_data_in_wrong_format(data_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "calib"
    bad.mkdir()
    (bad / "labels.csv").write_text("image,mask,pattern,intensity\nx.tif,x_Mask.tif,purple,loud\n")
    args = ["export", str(data_checkpoint), "--precision", "int8", "--val-images", "1", "--calib-data", str(bad)]
    _fails_with(args, "--calib-data: ", tmp_path / "o", monkeypatch, capsys)
    empty = tmp_path / "pngs"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"not really")
    args[-1] = str(empty)
    _fails_with(args, "pngs: no manifest CSV", tmp_path / "o", monkeypatch, capsys)


def test_unknown_precision_and_missing_data(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _fails_with(["export", str(tiny_checkpoint), "--precision", "fp8"], "--precision fp8: valid precisions",
                tmp_path / "o", monkeypatch, capsys)
    _fails_with(["export", str(tiny_checkpoint)], "records no dataset and fold patients; pass --val-data",
                tmp_path / "o", monkeypatch, capsys)


def test_bare_export_without_runs_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _fails_with(["export"], "no checkpoint given and no runs/train/<n> here; pass CKPT", tmp_path / "o",
                monkeypatch, capsys)
    assert not (tmp_path / "runs" / "export").exists()
