"""`hep2edge train --data A --data B`: several folders, one training set; patients namespaced where ids collide."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hep2edge.data.combined import folder_labels, load_datasets
from hep2edge.errors import ConfigError, DataError

TRAIN_ARGS = {"encoder": "mobilenet_v2", "decoder_channels": (32, 16, 16, 8, 8), "tile": 64, "epochs": 1,
              "folds": 3, "fold": 0, "batch_size": 32, "progress": False}


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny dataset whose patient ids 00001 and 2 (= 00002) collide with synth_tiny's; the rest don't."""
    from hep2edge.synth.writer import SynthConfig, synthesize_dataset

    out = tmp_path_factory.mktemp("second") / "reviewed"
    synthesize_dataset(SynthConfig(out=out, patients=7, images_per_patient=2, size=(128, 128), seed=5))
    rows = list(csv.DictReader((out / "labels.csv").open()))
    renamed = {"00001": "00001", "00002": "2"}
    for row in rows:
        row["patient"] = renamed.get(row["patient"], "01" + row["patient"][2:])
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_only_colliding_ids_are_namespaced_in_every_folder(synth_tiny: Path, reviewed: Path) -> None:
    combined = load_datasets([synth_tiny, reviewed])
    first, second = ({r.patient for r in part.records} for part in combined.parts)
    assert {"data:00001", "data:00002"} <= first and "00003" in first and "00001" not in first
    assert {"reviewed:00001", "reviewed:2"} <= second and "01003" in second
    assert len(combined.records) == 28 and combined.roots == (synth_tiny, reviewed)
    assert folder_labels([Path("/a/data"), Path("/b/data")]) == ["1", "2"]  # same name: the position


def test_problems_of_every_folder_are_reported_together(synth_tiny: Path, reviewed: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copytree(reviewed, tmp_path / "bad"))
    lines = (bad / "labels.csv").read_text().splitlines()
    lines[2] = lines[2].replace("positive", "positve").replace("intermediate", "positve")
    lines[3] = lines[3].replace("00002_p1.tif", "../00002_p1.tif", 1)
    (bad / "labels.csv").write_text("\n".join(lines) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_datasets([synth_tiny, bad, empty])
    message = str(info.value).splitlines()
    assert message[0].startswith("3 problem(s) in 2 of 3 dataset folders (run `hep2edge check")
    assert f"`hep2edge check {bad}`" in message[0] and f"check {synth_tiny}`" not in message[0]
    assert message[1].strip().startswith(f"{bad / 'labels.csv'}:3: unknown intensity label 'positve'")
    assert message[2].strip() == (f"{bad / 'labels.csv'}:4: image ../00002_p1.tif lies outside the dataset folder "
                                  f"{bad}; `allow_outside` permits it")
    assert message[3].strip() == f"{empty}: folder is empty"
    with pytest.raises(DataError) as allowed:  # --allow-outside applies to each folder
        load_datasets([synth_tiny, bad], allow_outside=True)
    assert str(allowed.value).startswith("1 problem(s) in 1 of 2") and "lies outside" not in str(allowed.value)


def test_folders_given_twice_or_with_one_manifest_are_refused(synth_tiny: Path, reviewed: Path) -> None:
    pytest.importorskip("torch")
    from hep2edge.train.config import TrainConfig

    with pytest.raises(ConfigError, match="given twice"):
        TrainConfig(data=(synth_tiny, synth_tiny / ".." / "data"))
    with pytest.raises(ConfigError, match="`manifest` names one folder's manifest"):
        TrainConfig(data=(synth_tiny, reviewed), manifest=synth_tiny / "labels.csv")
    single = TrainConfig(data=[synth_tiny])
    assert single.data == synth_tiny and single.resume_key()["data"] == str(synth_tiny.resolve())
    assert TrainConfig(data=(synth_tiny, reviewed)).resume_key()["data"] == [str(synth_tiny.resolve()),
                                                                              str(reviewed.resolve())]


def test_missing_folders_are_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hep2edge.cli.app import app

    result = CliRunner().invoke(app, ["train", "--data", "a", "--data", str(tmp_path), "--data", "b"])
    assert result.exit_code != 0 and "--data a, b: no such dataset folder" in str(result.exception)


def test_bit_depths_mixed_across_folders_are_one_line(synth_tiny: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from hep2edge.imageio import read_image, write_image_tiff
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.run import run_training

    deep = Path(shutil.copytree(synth_tiny, tmp_path / "deep"))
    for image in deep.glob("*_p?.tif"):
        write_image_tiff(image, read_image(image).astype(np.uint16) * 257)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="mixes pixel types") as info:
        run_training(TrainConfig(data=(synth_tiny, deep), **TRAIN_ARGS))
    assert "\n" not in str(info.value) and str(deep) in str(info.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_yaml_list_trains_on_both_and_export_reads_the_same_set(synth_tiny: Path, reviewed: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from typer.testing import CliRunner

    from hep2edge.cli.app import app
    from hep2edge.export.tiles import TRAIN_KEYS, VAL_KEYS, load_records, resolve_selection

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hep2edge.yaml").write_text(
        f"train:\n  data: [{synth_tiny}, {reviewed}]\n  encoder: mobilenet_v2\n  decoder-channels: 32,16,16,8,8\n"
        "  tile: 64\n  epochs: 1\n  folds: 3\n  fold: '0'\n  batch-size: 32\n  progress: false\n")
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "train" / "1"
    data = torch.load(run / "fold_0" / "best.pt", map_location="cpu", weights_only=True)["data"]
    assert data["roots"] == [str(synth_tiny.resolve()), str(reviewed.resolve())] and "root" not in data
    assert data["manifests"] == [str(synth_tiny.resolve() / "labels.csv"), str(reviewed.resolve() / "labels.csv")]
    folds = json.loads((run / "folds.json").read_text())
    assert folds["meta"]["dataset"] == data["roots"] and len(folds["folds"]) == 14
    assert {"data:00001", "reviewed:00001", "data:00002", "reviewed:2", "01003", "00003"} <= set(folds["folds"])
    ckpt = run / "fold_0" / "best.pt"
    train = load_records(resolve_selection(None, "--calib-data", data, TRAIN_KEYS, ckpt))
    val = load_records(resolve_selection(None, "--val-data", data, VAL_KEYS, ckpt))
    assert {r.patient for r in val} == set(data["val_patients"])
    assert {r.patient for r in train} == set(data["train_patients"])
    assert len(train) + len(val) == 28
    assert {r.image.parent.resolve() for r in train} == {synth_tiny.resolve(), reviewed.resolve()}


def test_old_checkpoint_with_one_root_still_selects_its_patients(synth_tiny: Path, tmp_path: Path) -> None:
    from hep2edge.export.tiles import load_records, resolve_selection

    data = {"root": str(synth_tiny), "train_patients": ["00001", "00002"], "val_patients": ["00003"]}
    selection = resolve_selection(None, "--val-data", data, ("val_patients",), tmp_path / "c.pt")
    assert selection.roots == (synth_tiny,) and selection.shown == str(synth_tiny)
    assert {r.patient for r in load_records(selection)} == {"00003"}
    gone = {**data, "roots": [str(synth_tiny), str(tmp_path / "gone")]}
    with pytest.raises(ConfigError, match="gone which is not here; pass --val-data"):
        resolve_selection(None, "--val-data", gone, ("val_patients",), tmp_path / "c.pt")
