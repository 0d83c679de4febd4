"""`hep2edge train`: defaults from hep2edge.yaml, numbered run folders, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_cli_without

torch = pytest.importorskip("torch")
from typer.testing import CliRunner  # noqa: E402

from hep2edge.cli.app import app  # noqa: E402


def test_bare_train_takes_its_dataset_from_hep2edge_yaml(synth_tiny: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hep2edge.yaml").write_text(
        f"train:\n  data: {synth_tiny}\n  encoder: mobilenet_v2\n  decoder-channels: 32,16,16,8,8\n"
        "  tile: 64\n  epochs: 1\n  folds: 3\n  fold: '2'\n  batch-size: 8\n  weighting: uncertainty\n"
        "  normalization: minmax\n  progress: false\n"
    )
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "train" / "1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"][0]["fold"] == 2 and summary["config"]["weighting"] == "uncertainty"
    checkpoint = torch.load(run / "fold_2" / "best.pt", map_location="cpu", weights_only=True)
    assert checkpoint["contract"]["normalization"]["mode"] == "minmax"
    assert "held-out folds [2]" in result.output


@pytest.mark.parametrize("args, message", [
    ([], "pass --data DIR or set `train: {data: DIR}` in hep2edge.yaml"),
    (["--data", "no/such/folder"], "--data no/such/folder: no such dataset folder"),
    (["--data", ".", "--fold", "x"], "--fold must be 'all' or a fold number"),
])
def test_unresolved_or_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hep2edge", "train", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for a run that cannot start"


def _copy_dataset(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_unreadable_image_is_one_line_and_nothing_is_written(synth_tiny: Path, tmp_path: Path) -> None:
    data = _copy_dataset(synth_tiny, tmp_path / "data")
    image = data / "00003_p2.tif"
    image.write_bytes(image.read_bytes()[:3000])
    result = subprocess.run([sys.executable, "-m", "hep2edge", "train", "--data", str(data), "--encoder",
                             "mobilenet_v2", "--tile", "64", "--epochs", "1", "--no-progress"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{image}: truncated TIFF" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for a run that cannot start"


@pytest.mark.parametrize("case, message", [
    ("no_mask", "1 image(s) have no mask"),
    ("too_many_folds", "cannot make 9 patient-wise folds from 7 patient(s)"),
    ("mixed_depth", "mixes pixel types"),
])
def test_bad_dataset_fails_before_the_run_folder_exists(synth_tiny: Path, tmp_path: Path, case: str, message: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from hep2edge.errors import Hep2EdgeError
    from hep2edge.imageio import write_image_tiff
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.run import run_training

    data = _copy_dataset(synth_tiny, tmp_path / "data")
    if case == "no_mask":
        (data / "labels.csv").write_text((data / "labels.csv").read_text().replace("00002_p1_Mask.tif", ""))
        (data / "00002_p1_Mask.tif").unlink()
    if case == "mixed_depth":
        write_image_tiff(data / "00004_p1.tif", np.full((128, 128), 1000, np.uint16))
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data=data, encoder="mobilenet_v2", decoder_channels=(32, 16, 16, 8, 8), tile=64, epochs=1,
                         folds=9 if case == "too_many_folds" else 3, fold=0, progress=False)
    with pytest.raises(Hep2EdgeError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        run_training(config)
    assert "\n" not in str(info.value)
    if case == "mixed_depth":
        assert "00004_p1.tif is uint16" in str(info.value)
    assert not (tmp_path / "runs").exists()




@pytest.mark.parametrize("args", [[], ["--data", "no/such/folder"]])
def test_without_the_train_extra_train_names_it_first(args: list[str], tmp_path: Path) -> None:
    result = run_cli_without(("torch", "segmentation_models_pytorch"), ["train", *args], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'hep2edge[train]'" in lines[0], result.stderr


def _outside_row(data: Path, outside: Path, present: bool) -> str:
    """Move 00003_p2 (image and mask) out of the dataset (or delete it) and name it `../` in labels.csv."""
    for name in ("00003_p2.tif", "00003_p2_Mask.tif"):
        if present:
            (data / name).rename(outside / name)
        else:
            (data / name).unlink()
    text = (data / "labels.csv").read_text().replace("00003_p2", "../00003_p2")
    (data / "labels.csv").write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("../00003_p2.tif"))
    return (f"{data / 'labels.csv'}:{line}: image ../00003_p2.tif lies outside the dataset folder {data}; "
            "`allow_outside` permits it")


def test_train_refuses_manifest_paths_outside_the_dataset(synth_tiny: Path, tmp_path: Path) -> None:
    data = _copy_dataset(synth_tiny, tmp_path / "data")
    expected = _outside_row(data, tmp_path, present=True)
    args = ["--data", str(data), "--encoder", "mobilenet_v2", "--tile", "64", "--epochs", "1", "--folds", "3",
            "--fold", "0", "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "hep2edge", "train", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    expected = expected.replace("`allow_outside`", "--allow-outside")
    assert expected in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_train_outside_refusal_says_nothing_about_the_outside_file(synth_tiny: Path, tmp_path: Path) -> None:
    from hep2edge.errors import DataError
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.run import prepare

    messages = []
    for name, present in (("a", True), ("b", False)):
        (tmp_path / name).mkdir()
        data = _copy_dataset(synth_tiny, tmp_path / name / "data")
        expected = _outside_row(data, tmp_path / name, present)
        config = TrainConfig(data=data, encoder="mobilenet_v2", decoder_channels=(32, 16, 16, 8, 8), tile=64,
                             folds=3, progress=False)
        with pytest.raises(DataError) as info:
            prepare(config)
        assert expected in [line.strip() for line in str(info.value).splitlines()]
        messages.append(str(info.value).replace(str(tmp_path / name), "X"))
    assert messages[0] == messages[1]
    allowed = prepare(config.replace(data=tmp_path / "a" / "data", allow_outside=True))
    assert any(r.image == tmp_path / "a" / "data" / ".." / "00003_p2.tif" for r in allowed.records)


def test_allow_outside_cli_default_is_the_config_default() -> None:
    import dataclasses

    import typer

    from hep2edge.train.config import TrainConfig

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    option = next(p for p in command.params if p.name == "allow_outside")
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "allow_outside")
    assert option.default is field.default is False
    assert option.opts == ["--allow-outside"]
    assert "allow_outside" not in TrainConfig(data=Path("d")).resume_key()  # a permission, not a setting
