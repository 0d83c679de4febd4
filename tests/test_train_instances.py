"""Per-cell training (issue 12): dense heads (distance, pattern map), decoder architectures, their targets,
N-task weighting, per-cell validation metrics and the CLI run that reports them."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
smp = pytest.importorskip("segmentation_models_pytorch")
from typer.testing import CliRunner  # noqa: E402

from hep2edge.cli.app import app  # noqa: E402
from hep2edge.data.combined import load_datasets  # noqa: E402
from hep2edge.errors import ConfigError  # noqa: E402
from hep2edge.imageio import read_labels  # noqa: E402
from hep2edge.instances import InstanceParams, distance_target  # noqa: E402
from hep2edge.tiling import tile_grid  # noqa: E402
from hep2edge.train.augment import Augmenter  # noqa: E402
from hep2edge.train.cell_eval import CellScorer  # noqa: E402
from hep2edge.train.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint  # noqa: E402
from hep2edge.train.config import TrainConfig  # noqa: E402
from hep2edge.train.losses import MultiTaskLoss  # noqa: E402
from hep2edge.train.model import PATTERN_MAP_CLASSES, ModelConfig, MultiTaskUnet  # noqa: E402
from hep2edge.train.resume import check_same_run  # noqa: E402
from hep2edge.train.run import cell_classes  # noqa: E402
from hep2edge.train.targets import DenseNeeds, cut_dense_targets, pattern_classes, tile_ids  # noqa: E402
from hep2edge.train.tiles_dataset import build_tile_set, valid_pixels  # noqa: E402
from hep2edge.train.weighting import build_weighting, task_gradient_norms  # noqa: E402

ENCODER = "mobilenet_v2"
DECODER = (32, 16, 16, 8, 8)
SCSE_DECODER = (32, 16, 16, 16, 16)  # scse squeezes each stage's channels by 16
NEW_MODEL_FIELDS = ("arch", "attention", "distance", "pattern_map")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the 2 shared cores are oversubscribed: 1 thread is fastest


def _model(**changes: Any) -> MultiTaskUnet:
    torch.manual_seed(0)
    decoder = SCSE_DECODER if changes.get("attention") == "scse" else DECODER
    return MultiTaskUnet(ModelConfig(encoder=ENCODER, decoder_channels=decoder, dropout=0.0, **changes)).eval()


@pytest.mark.parametrize("arch, attention, distance, pattern_map", [
    ("unet", None, False, False),
    ("unet", None, True, False),
    ("unet", None, False, True),
    ("unet", "scse", True, True),
    ("unetplusplus", "scse", True, True),
    ("fpn", None, True, True),
    ("deeplabv3plus", None, False, True),
])
def test_forward_gives_the_dense_heads_asked_for(arch: str, attention: str | None, distance: bool,
                                                 pattern_map: bool) -> None:
    model = _model(arch=arch, attention=attention, distance=distance, pattern_map=pattern_map, pool_levels=2)
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 96), maps=True)
    expected = {"mask": (2, 1, 64, 96), "pattern": (2, 7), "intensity": (2, 1),
                "pattern_logits": (2, 7, 2, 3), "intensity_logits": (2, 1, 2, 3)}
    expected |= {"distance": (2, 1, 64, 96)} if distance else {}
    expected |= {"pattern_map": (2, len(PATTERN_MAP_CLASSES), 64, 96)} if pattern_map else {}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert model.config.dense_outputs()[0] == ("mask", 1)


def test_old_model_config_and_state_dict_still_load(tiny_checkpoint: Path, tmp_path: Path) -> None:
    old = {"encoder": ENCODER, "in_channels": 1, "num_patterns": 7, "pool_levels": 1, "dropout": 0.0,
           "decoder_channels": list(DECODER)}
    config = ModelConfig.from_dict(old)
    assert (config.arch, config.attention, config.distance, config.pattern_map) == ("unet", None, False, False)
    model = MultiTaskUnet(config)
    reference = smp.Unet(encoder_name=ENCODER, encoder_weights=None, in_channels=1, classes=1,
                         decoder_channels=DECODER)  # how the model was built before the dense heads
    ours = {k[len("unet."):]: v.shape for k, v in model.state_dict().items() if k.startswith("unet.")}
    assert ours == {k: v.shape for k, v in reference.state_dict().items()}
    # a checkpoint written before the new ModelConfig fields existed
    data = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    data["model"] = {k: v for k, v in data["model"].items() if k not in NEW_MODEL_FIELDS}
    save_checkpoint(tmp_path / "old.pt", data)
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert not loaded.config.distance and set(loaded.model(torch.rand(1, 1, 64, 64))) == {"mask", "pattern",
                                                                                        "intensity"}


def test_checkpoint_records_the_heads_and_round_trips(tmp_path: Path) -> None:
    from hep2edge.contract import ModelContract

    model = _model(arch="fpn", distance=True, pattern_map=True)
    save_checkpoint(tmp_path / "m.pt", make_checkpoint(model, ModelContract(tile=64, encoder=ENCODER)))
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.data["model"]["arch"] == "fpn" and loaded.config.distance and loaded.config.pattern_map
    assert loaded.contract.cell_outputs == ("distance", "pattern_map")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x)["pattern_map"], model(x)["pattern_map"])


@pytest.mark.parametrize("arch, attention, tile, message", [
    ("nope", "none", 64, "unknown architecture; valid names: deeplabv3, deeplabv3plus, fpn"),
    ("fpn", "scse", 64, "`attention` scse: only for unet, unetplusplus (not fpn)"),
    ("unet", "cbam", 64, "`attention` cbam: valid: none, scse"),
    ("pan", "none", 64, "`arch` pan needs `tile` >= 128"),
    ("unet", "scse", 64, "needs `decoder_channels` of at least 16 each, got [32, 16, 16, 8, 8]"),
])
def test_bad_arch_or_attention_is_a_config_error(synth_tiny: Path, arch: str, attention: str, tile: int,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(data=synth_tiny, arch=arch, attention=attention, tile=tile, decoder_channels=DECODER)


def test_unknown_arch_on_the_command_line_is_one_line_listing_valid_names(synth_tiny: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hep2edge", "train", "--data", str(synth_tiny), "--arch", "unet3",
                             "--encoder", ENCODER, "--tile", "64"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--arch unet3" in lines[0] and "segformer" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _hand_made_tile() -> tuple[np.ndarray, np.ndarray]:
    """A 12 x 16 tile: cell 1 (rows 2-6, cols 2-6), cell 2 touching it (rows 2-6, cols 7-12), cell 3 alone."""
    labels = np.zeros((12, 16), np.int32)
    labels[2:7, 2:7] = 1
    labels[2:7, 7:13] = 2
    labels[8:11, 1:4] = 3
    return labels, labels > 0


def test_dense_targets_of_a_hand_made_label_tile(tmp_path: Path) -> None:
    from hep2edge.imageio import write_labels_tiff

    labels, mask = _hand_made_tile()
    path = write_labels_tiff(tmp_path / "t_Labels.tif", labels.astype(np.uint16))
    grid = tile_grid(12, 16, 32)  # one tile, padded to 32 x 32
    cut = cut_dense_targets(path, mask, grid, DenseNeeds(distance=True, pattern_map=True), pattern=1, cells={2: 4})
    assert set(cut) == {"instances", "distance", "classes"}
    instances, distance, classes = cut["instances"][0], cut["distance"][0], cut["classes"][0]
    assert instances.dtype == np.uint16 and np.array_equal(instances[:12, :16], labels) and not instances[12:].any()
    expected = np.rint(distance_target(labels) * 255).astype(np.uint8)
    assert distance.dtype == np.uint8 and np.array_equal(distance[:12, :16], expected)
    for cell in (1, 2, 3):
        assert distance[:12, :16][labels == cell].max() == 255, "each cell peaks at 1 (its own maximum)"
    assert not distance[:12, :16][~mask].any() and distance[3, 6] < distance[4, 4], "low at the shared border"
    assert classes.dtype == np.uint8 and not classes[:12, :16][~mask].any() and not classes[12:].any()
    inside = classes[:12, :16]
    assert set(inside[labels == 1]) == {2} and set(inside[labels == 3]) == {2}, "specimen pattern 1 -> class 2"
    assert set(inside[labels == 2]) == {5}, "cells.csv gives cell 2 pattern 4 -> class 5"
    # without a label image: the mask's connected components (the two touching cells are one)
    components = cut_dense_targets(None, mask, grid, DenseNeeds(pattern_map=True, min_area=1), 1, {})
    assert set(np.unique(components["instances"])) == {0, 1, 2} and "distance" not in components
    assert np.array_equal(pattern_classes(mask, labels, 0, {}), mask.astype(np.uint8))


def test_tile_ids_renumber_only_beyond_uint16() -> None:
    small = np.array([[[0, 7], [7, 65535]]], np.int32)
    assert np.array_equal(tile_ids(small), small.astype(np.uint16))
    big = np.array([[[0, 70000], [70000, 5]], [[9, 0], [0, 0]]], np.int32)
    assert np.array_equal(tile_ids(big), np.array([[[0, 2], [2, 1]], [[1, 0], [0, 0]]], np.uint16))


def test_augmentation_moves_every_per_pixel_target_with_the_image() -> None:
    labels, mask = (np.pad(a, ((0, 4), (0, 0))) for a in _hand_made_tile())  # square: 16 x 16
    distance = np.rint(distance_target(labels) * 255).astype(np.uint8)
    images = (labels * 40).astype(np.uint8)[None].repeat(6, 0)
    stacks = [a[None].repeat(6, 0) for a in (mask, labels.astype(np.uint16), distance)]
    out_images, out_mask, out_labels, out_distance = Augmenter(seed=5).geometric(images, *stacks)
    plain = Augmenter(seed=5).geometric(images, stacks[0])
    assert np.array_equal(plain[0], out_images), "extra targets do not change the random draws"
    assert np.array_equal(out_mask, out_labels > 0) and np.array_equal(out_images, (out_labels * 40).astype(np.uint8))
    assert np.array_equal(out_distance > 0, out_mask)
    for i in range(6):  # the distance map of the moved labels is the moved distance map
        assert np.array_equal(np.rint(distance_target(out_labels[i].astype(np.int32)) * 255), out_distance[i])


def test_cells_csv_classes_reach_the_pattern_map_targets(synth_tiny: Path, tmp_path: Path) -> None:
    data = shutil.copytree(synth_tiny, tmp_path / "data")
    labels = read_labels(data / "00001_p1_Labels.tif")
    cell = int(labels[labels > 0][0])
    records = load_datasets([data]).records
    specimen = next(r.pattern for r in records if r.image.stem == "00001_p1")
    other = (int(specimen) + 3) % 7
    with (data / "cells.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["stem", "cell", "class"], ["00001_p1", cell, PATTERN_MAP_CLASSES[1 + other]]])
    config = TrainConfig(data=data, encoder=ENCODER, tile=64, pattern_map=True)
    dataset = load_datasets([data])
    classes = cell_classes(config, dataset)
    assert classes is not None and classes[[r.image.stem for r in dataset.records].index("00001_p1")] == {cell: other}
    tiles = build_tile_set(dataset.records, 64, dense=DenseNeeds(pattern_map=True), cell_classes=classes)
    assert tiles.classes is not None and tiles.instances is not None and tiles.distance is None
    first = np.flatnonzero(tiles.image_ids == str(dataset.records[0].image))
    assert dataset.records[0].image.stem == "00001_p1"
    cell_pixels = tiles.instances[first] == cell
    assert cell_pixels.any() and set(np.unique(tiles.classes[first][cell_pixels])) == {1 + other}
    assert np.array_equal(tiles.classes > 0, tiles.masks)


def test_losses_of_the_dense_heads_and_perfect_maps_score_one() -> None:
    labels = np.zeros((32, 32), np.int32)  # small hand-made cells (>= 100 px), two of them touching
    labels[2:12, 2:12], labels[2:12, 12:24], labels[16:26, 4:14] = 1, 2, 3
    mask = labels > 0
    target = distance_target(labels)
    classes = np.where(mask, 3, 0).astype(np.uint8)
    logit = torch.from_numpy(np.log(target.clip(1e-4, 1 - 1e-4) / (1 - target.clip(1e-4, 1 - 1e-4))))[None, None]
    pmap = torch.nn.functional.one_hot(torch.from_numpy(classes).long(), 8).permute(2, 0, 1)[None].float() * 20
    out = {"mask": torch.from_numpy(mask)[None, None].float() * 40 - 20, "pattern": torch.zeros(1, 7),
           "intensity": torch.zeros(1, 1), "distance": logit, "pattern_map": pmap}
    loss_fn = MultiTaskLoss("bce", distance=True, pattern_map=True, distance_kind="mse")
    losses = loss_fn(out, torch.from_numpy(mask)[None, None].float(), torch.tensor([2]), torch.tensor([1]),
                     distance=torch.from_numpy(target)[None, None], classes=torch.from_numpy(classes)[None].long())
    assert losses.shape == (5,) and float(losses[3]) < 1e-6 and float(losses[4]) < 1e-3
    with pytest.raises(ValueError, match="no distance target"):
        loss_fn(out, torch.from_numpy(mask)[None, None].float(), torch.tensor([2]), torch.tensor([1]))
    scorer = CellScorer(InstanceParams(min_area=30, smooth=0, scale=1))  # 10 px cells: full size, unsmoothed
    scorer.add(out, mask[None], valid_pixels(np.array([[28, 30]]), 32), labels[None].astype(np.uint16),
               classes[None])
    metrics = scorer.metrics()
    assert metrics["aji"] == pytest.approx(1.0) and metrics["pq"] == pytest.approx(1.0)
    assert metrics["f1"] == 1.0 and metrics["miou"] == 1.0 and np.isnan(metrics["iou_homogeneous"])


@pytest.mark.parametrize("name", ["fixed", "gradnorm", "uncertainty"])
def test_weighting_steps_with_five_tasks(name: str) -> None:
    torch.manual_seed(0)
    shared, heads = torch.nn.Linear(4, 8), [torch.nn.Linear(8, 1) for _ in range(5)]
    weighting = build_weighting(name, (1.0, 2.0, 1.0, 0.5, 0.5), alpha=0.12, lr=0.05)
    params = [*shared.parameters(), *(p for h in heads for p in h.parameters()), *weighting.optimizer_parameters()]
    optimizer = torch.optim.SGD(params, lr=1e-2)
    x = torch.randn(16, 4)
    for _ in range(4):
        features = torch.relu(shared(x))
        losses = torch.stack([(s * h(features) ** 2).mean() for s, h in zip((10, 1, 1, 3, 1), heads)])
        norms = task_gradient_norms(losses, shared.weight) if weighting.needs_task_gradients else None
        optimizer.zero_grad()
        weighting.total(losses).backward()
        optimizer.step()
        weighting.update(losses.detach(), norms)
    weights = weighting.current()
    assert weights.shape == (5,) and bool(torch.isfinite(weights).all())
    if name == "gradnorm":
        assert float(weights.sum()) == pytest.approx(5.0, abs=1e-4)


def test_task_weights_and_resume_key_of_older_runs(synth_tiny: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=synth_tiny, encoder=ENCODER, tile=64, instances=True, pattern_map=True)
    assert config.tasks == ("mask", "pattern", "intensity", "distance", "pattern_map")
    assert config.weights == (1.0, 1.0, 1.0, 1.0, 1.0) and config.model_config.distance
    assert config.replace(task_weights=(1, 2, 3, 4, 5)).weights == (1, 2, 3, 4, 5)
    with pytest.raises(ConfigError, match="`task_weights` needs 3 or 5 non-negative numbers"):
        config.replace(task_weights=(1, 1, 1, 1))
    with pytest.raises(ConfigError, match="`monitor` miou needs `pattern_map`"):
        TrainConfig(data=synth_tiny, encoder=ENCODER, tile=64, instances=True, monitor="miou")
    plain = TrainConfig(data=synth_tiny, encoder=ENCODER, tile=64)
    saved = {k: v for k, v in plain.resume_key().items()
             if k not in ("arch", "attention", "instances", "pattern_map", "distance_loss", "pattern_map_dice")}
    check_same_run(tmp_path / "last.pt", {**TrainConfig.key_defaults(), **saved}, plain.resume_key())


def test_cli_run_with_instances_and_pattern_map_reports_cells(synth_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(synth_tiny), "--out", str(out), "--encoder", ENCODER, "--decoder-channels",
            "32,16,16,8,8", "--tile", "64", "--epochs", "1", "--folds", "3", "--fold", "0", "--batch-size", "16",
            "--instances", "--pattern-map", "--weighting", "gradnorm", "--augment", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cells (patch level): aji" in result.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("aji", "pq", "f1", "miou"):
        assert isinstance(summary["folds"][0]["metrics"]["patch"][key], float), key
        assert key in summary["mean"]["patch"] and key in summary["std"]["patch"]
    assert summary["cells"]["level"] == "patch" and "miou" in summary["cells"]["keys"]
    assert "## Cells (patch level" in (out / "summary.md").read_text()
    checkpoint = torch.load(out / "fold_0" / "best.pt", map_location="cpu", weights_only=True)
    assert checkpoint["model"]["distance"] and checkpoint["model"]["pattern_map"]
    assert checkpoint["model"]["arch"] == "unet"
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train_loss_distance", "train_loss_pattern_map", "weight_distance", "val_loss_pattern_map",
                   "patch_aji", "patch_miou"):
        assert column in header, column
    row = dict(zip(header, (out / "metrics.csv").read_text().splitlines()[1].split(",")))
    parts = [float(row[f"patch_{k}"]) for k in ("dice", "pattern_accuracy", "intensity_accuracy", "aji")]
    assert float(row["score"]) == pytest.approx(sum(parts) / 4, abs=1e-6)  # the distance head's AJI joins the score
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["instances"] and resolved["pattern_map"] and resolved["arch"] == "unet"
