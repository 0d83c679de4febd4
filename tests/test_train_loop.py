"""The training loop: the loss falls on a few images, a run writes its outputs, checkpoints round-trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hep2edge.data.manifest import load_dataset  # noqa: E402
from hep2edge.errors import ConfigError  # noqa: E402
from hep2edge.normalization import NormalizationSpec, normalize_tiles  # noqa: E402
from hep2edge.train.checkpoint import load_checkpoint  # noqa: E402
from hep2edge.train.config import TrainConfig  # noqa: E402
from hep2edge.train.distributed import DistContext  # noqa: E402
from hep2edge.train.loop import build_parts, train_step, use_amp  # noqa: E402
from hep2edge.train.run import run_training  # noqa: E402
from hep2edge.train.tiles_dataset import build_tile_set  # noqa: E402

TINY: dict[str, Any] = dict(encoder="mobilenet_v2", decoder_channels=(32, 16, 16, 8, 8), tile=64, batch_size=16,
                            folds=3, fold=0, lr=1e-3, progress=False)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the 2 shared cores are oversubscribed: 1 thread is fastest


def test_loss_falls_on_a_few_images(synth_tiny: Path, tmp_path: Path) -> None:
    tiles = build_tile_set(load_dataset(synth_tiny).records[:4], tile=64)
    config = TrainConfig(data=synth_tiny, out=tmp_path, weighting="fixed", dropout=0.0, **TINY)
    parts = build_parts(config, DistContext(), tiles, fold=0)
    batch = tiles.subset(np.arange(12))
    x = torch.from_numpy(normalize_tiles(batch.images, NormalizationSpec()))
    history = [train_step(parts, DistContext(), x, batch, amp=False) for _ in range(20)]
    first, last = history[0], torch.stack(history[-3:]).mean(0)
    assert (last < first).all(), f"every task loss must fall: {first.tolist()} -> {last.tolist()}"
    assert float(last.sum()) < 0.6 * float(first.sum())


def test_run_writes_outputs_and_the_checkpoint_round_trips(synth_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary_path = run_training(TrainConfig(data=synth_tiny, out=out, epochs=2, augment=True,
                                            weighting="gradnorm", **TINY))
    summary = json.loads(summary_path.read_text())
    assert summary["monitor"] == "score" and summary["monitor_mode"] == "max"
    fold = summary["folds"][0]
    assert fold["fold"] == 0 and fold["checkpoint"] == "fold_0/best.pt"
    for level in ("patch", "image", "patient"):
        for key in ("dice", "pattern_accuracy", "pattern_mca", "intensity_accuracy", "iou", "intensity_auc"):
            assert key in summary["mean"][level] and key in summary["std"][level]
            assert key in fold["metrics"][level]
    assert np.asarray(summary["confusion"]["patch"]).sum() == fold["metrics"]["patch"]["n"]
    for name in ("config.yaml", "folds.json", "summary.md", "plots/losses.png", "plots/task_weights.png",
                 "plots/confusion_patch.png", "plots/confusion_patient.png", "fold_0/last.pt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and {"weight_mask", "val_loss", "patient_dice"} <= set(rows[0])
    assert "| Mask Dice |" in (out / "summary.md").read_text()

    raw = torch.load(out / fold["checkpoint"], map_location="cpu", weights_only=True)
    data = raw["data"]
    assert Path(data["root"]).is_absolute() and Path(data["root"]) == synth_tiny.resolve()
    assert Path(data["folds_file"]).is_file() and Path(data["manifest"]).is_file()
    assert data["channel_policy"] == "luminance"
    assert set(data["train_patients"]).isdisjoint(data["val_patients"]) and data["val_patients"]
    loaded = load_checkpoint(out / fold["checkpoint"])
    assert loaded.contract.tile == 64 and loaded.contract.normalization.mode == "fixed"
    assert loaded.config.encoder == "mobilenet_v2" and raw["fold"] == 0 and raw["metrics"]["patch"]["dice"] > 0

    # the reloaded model reproduces the checkpoint's held-out metrics exactly
    from hep2edge.train.evaluate import evaluate
    from hep2edge.train.losses import MultiTaskLoss

    tiles = build_tile_set(load_dataset(synth_tiny).records, tile=64)
    val = tiles.subset(tiles.patients_mask(data["val_patients"]))
    again = evaluate(loaded.model, val, NormalizationSpec(), MultiTaskLoss(), 16, torch.device("cpu"))
    assert again.levels["patch"] == pytest.approx(raw["metrics"]["patch"], nan_ok=True)


def test_existing_run_needs_resume_and_resume_needs_the_same_settings(synth_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(data=synth_tiny, out=out, epochs=1, weighting="fixed", **TINY)
    run_training(config)
    with pytest.raises(ConfigError, match="`resume`"):
        run_training(config)
    with pytest.raises(ConfigError, match="different settings.*lr"):
        run_training(config.replace(resume=True, lr=0.5))
    before = (out / "fold_0" / "best.pt").stat().st_mtime_ns
    run_training(config.replace(resume=True))  # already finished: nothing retrained
    assert (out / "fold_0" / "best.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize("changes, message", [
    ({"seg_loss": "focal"}, "`seg_loss` focal"),
    ({"weighting": "magic"}, "`weighting` magic"),
    ({"tile": 100}, "multiple of 32"),
    ({"fold": 5, "folds": 5}, "`fold` must be"),
    ({"encoder": "resnet9000"}, "`encoder` resnet9000: Wrong encoder name"),
    ({"encoder": "tu-resnet9000"}, r"`encoder` tu-resnet9000: Unknown model \(resnet9000\)"),
    ({"decoder_channels": (16, 8)}, "5 positive widths"),
    ({"channel_policy": "purple"}, "`channel_policy` purple"),
])
def test_bad_settings_are_one_line_config_errors(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data=tmp_path, out=tmp_path, **changes)


def test_timm_universal_encoder_is_accepted(tmp_path: Path) -> None:
    assert TrainConfig(data=tmp_path, out=tmp_path, encoder="tu-resnet18").model_config.encoder == "tu-resnet18"


def test_all_folds_give_mean_and_std_over_folds(synth_tiny: Path, tmp_path: Path) -> None:
    settings = {**TINY, "folds": 2, "fold": None}
    summary_path = run_training(TrainConfig(data=synth_tiny, out=tmp_path / "run", epochs=1,
                                            weighting="fixed", **settings))
    summary = json.loads(summary_path.read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    patients = [set(torch.load(tmp_path / "run" / f["checkpoint"], weights_only=True)["data"]["val_patients"])
                for f in summary["folds"]]
    assert patients[0].isdisjoint(patients[1]) and len(patients[0] | patients[1]) == 7  # every patient held out once
    for level in ("patch", "patient"):
        values = [f["metrics"][level]["dice"] for f in summary["folds"]]
        assert summary["mean"][level]["dice"] == pytest.approx(np.mean(values))
        assert summary["std"][level]["dice"] == pytest.approx(np.std(values))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [(r["fold"], r["epoch"]) for r in rows] == [("0", "1"), ("1", "1")]


def test_early_stopping_ends_a_fold_after_patience_epochs_without_gain(synth_tiny: Path, tmp_path: Path) -> None:
    """With a learning rate too small to improve anything, the fold stops after `patience` epochs without gain."""
    patience, epochs = 2, 6
    settings = {**TINY, "lr": 1e-12}
    summary_path = run_training(TrainConfig(data=synth_tiny, out=tmp_path / "run", epochs=epochs, patience=patience,
                                            monitor="val_loss", weighting="fixed", **settings))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    stop, bad = epochs, 0
    for index, row in enumerate(rows):
        bad = 0 if row["best"] == "1" else bad + 1
        if bad >= patience:
            stop = index + 1
            break
    assert len(rows) == stop < epochs, [(r["epoch"], r["best"], r["val_loss"]) for r in rows]
    fold = json.loads(summary_path.read_text())["folds"][0]
    assert fold["epochs_run"] == len(rows) and rows[fold["best_epoch"] - 1]["best"] == "1"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_mixed_precision_on_cuda_only(synth_tiny: Path, tmp_path: Path, device: str) -> None:
    """--amp (the default) trains in float16 autocast with a loss scaler on CUDA; CPU stays fp32."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ctx = DistContext(device=torch.device(device))
    tiles = build_tile_set(load_dataset(synth_tiny).records[:2], tile=64)
    config = TrainConfig(data=synth_tiny, out=tmp_path, weighting="gradnorm", amp=True, device=device, **TINY)
    parts = build_parts(config, ctx, tiles, fold=0)
    assert use_amp(config, ctx) == parts.scaler.is_enabled() == (device == "cuda")
    x = torch.from_numpy(normalize_tiles(tiles.images[:4], NormalizationSpec())).to(ctx.device)
    with torch.autocast("cuda", dtype=torch.float16) if device == "cuda" else torch.autocast("cpu", enabled=False):
        assert parts.wrapped(x)["mask"].dtype == (torch.float16 if device == "cuda" else torch.float32)
    losses = train_step(parts, ctx, x, tiles.subset(np.arange(4)), amp=use_amp(config, ctx))
    assert torch.isfinite(losses).all() and float(parts.weighting.current().sum()) == pytest.approx(3.0)


def test_folds_file_is_reused_whatever_the_seed(synth_tiny: Path, tmp_path: Path) -> None:
    """--folds-file: a later run trains on exactly the saved split; a file for another k is refused."""
    from hep2edge.folds import load_folds, make_folds, save_folds
    from hep2edge.train.run import resolve_folds

    dataset = load_dataset(synth_tiny)
    saved = {patient: (fold + 1) % 3 for patient, fold in make_folds(dataset.records, k=3, seed=0).items()}
    path = save_folds(tmp_path / "folds.json", saved)  # not the split seed 0 makes
    config = TrainConfig(data=synth_tiny, out=tmp_path / "run", folds_file=path, seed=0, **TINY)
    folds, used = resolve_folds(config, dataset, DistContext())
    assert folds == saved and used == path.resolve() and load_folds(path) == saved
    with pytest.raises(ConfigError, match="holds 3 folds but `folds` is 2"):
        resolve_folds(config.replace(folds=2), dataset, DistContext())
