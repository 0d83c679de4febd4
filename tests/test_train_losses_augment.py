"""Task losses, class weights, augmentation consistency and the in-memory tile set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hep2edge.errors import DataError, RegistryError  # noqa: E402
from hep2edge.train.augment import Augmenter  # noqa: E402
from hep2edge.train.losses import SEG_LOSSES, MultiTaskLoss, inverse_frequency_weights  # noqa: E402
from hep2edge.train.tiles_dataset import build_tile_set, cut_record, valid_pixels  # noqa: E402


def test_dice_loss_is_zero_for_a_perfect_mask_and_near_one_for_the_inverse() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert float(SEG_LOSSES.get("dice")(perfect, target)) < 1e-3
    assert float(SEG_LOSSES.get("dice")(-perfect, target)) > 0.95
    both = SEG_LOSSES.get("dice+bce")(-perfect, target)
    assert float(both) > float(SEG_LOSSES.get("bce")(-perfect, target))
    with pytest.raises(RegistryError, match="bce, dice, dice\\+bce"):
        SEG_LOSSES.get("focal")


def test_inverse_frequency_weights_balance_classes() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2])
    weights = inverse_frequency_weights(labels, 4).numpy()
    counts = np.bincount(labels, minlength=4)
    assert np.allclose(weights[:3] * counts[:3], weights[0] * counts[0])  # every class weighs the same in total
    assert np.isclose((weights[labels]).mean(), 1.0)
    assert weights[3] == 1.0  # absent class: neutral


def test_multitask_loss_returns_three_finite_losses_with_smoothing() -> None:
    out = {"mask": torch.randn(4, 1, 8, 8), "pattern": torch.randn(4, 7), "intensity": torch.randn(4, 1)}
    mask = (torch.rand(4, 1, 8, 8) > 0.5).float()
    pattern, intensity = torch.tensor([0, 1, 2, 6]), torch.tensor([0, 1, 1, 0])
    plain = MultiTaskLoss("bce")(out, mask, pattern, intensity)
    smooth = MultiTaskLoss("bce", label_smoothing=0.2)(out, mask, pattern, intensity)
    assert plain.shape == (3,) and torch.isfinite(plain).all()
    assert not torch.isclose(plain[1], smooth[1]) and torch.isclose(plain[0], smooth[0])


def test_geometric_augmentation_moves_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(16, 32, 32), dtype=np.uint8)
    masks = images > 128  # the mask is a function of the pixels: it must stay so after any flip/rotation
    aug_images, aug_masks = Augmenter(seed=3).geometric(images, masks)
    assert np.array_equal(aug_masks, aug_images > 128)
    assert not np.array_equal(aug_images, images)
    # each output tile is one of the 8 symmetries of its input tile
    for before, after in zip(images, aug_images):
        variants = [np.rot90(v, k) for v in (before, before[:, ::-1]) for k in range(4)]
        assert any(np.array_equal(after, v) for v in variants)


def test_augmentation_is_seeded_and_its_state_round_trips() -> None:
    x = np.random.default_rng(1).random((4, 1, 16, 16)).astype(np.float32)
    a = Augmenter(seed=7)
    a.photometric(x)
    state = a.state_dict()
    first = a.photometric(x)
    b = Augmenter(seed=99)
    b.load_state_dict(state)
    assert np.array_equal(first, b.photometric(x))
    assert first.dtype == np.float32 and first.shape == x.shape and not np.array_equal(first, x)


def test_tile_set_from_synthetic_dataset(synth_small: Path) -> None:
    from hep2edge.data.manifest import load_dataset

    dataset = load_dataset(synth_small)
    tiles = build_tile_set(dataset.records[:3], tile=64)
    assert tiles.images.shape == (36, 64, 64) and tiles.images.dtype == np.uint8  # 192 x 256 -> 3 x 4 tiles
    assert tiles.masks.dtype == bool and tiles.masks.any()
    assert set(tiles.image_ids) == {str(r.image) for r in dataset.records[:3]}
    three = build_tile_set(dataset.records[:1], tile=64, in_channels=3)
    assert three.images.shape == (12, 64, 64, 3)
    subset = tiles.subset(tiles.patients_mask([dataset.records[0].patient]))
    assert set(subset.patient_ids) == {dataset.records[0].patient}


def test_small_image_pad_is_marked_invalid(synth_small: Path) -> None:
    from hep2edge.data.manifest import load_dataset

    record = load_dataset(synth_small).records[0]
    images, masks, valid = cut_record(record.image, record.mask, 256, "luminance", 1)  # 192 x 256 image
    assert images.shape == (1, 256, 256) and valid.tolist() == [[192, 256]]
    pixels = valid_pixels(valid, 256)
    assert pixels[0, :192].all() and not pixels[0, 192:].any() and not masks[0, 192:].any()


def test_missing_mask_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no mask"):
        cut_record(tmp_path / "a.tif", None, 64, "luminance", 1)


class _AllForeground(torch.nn.Module):
    """A stand-in model that calls every pixel foreground, pad included."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = x.shape
        return {"mask": torch.full((n, 1, h, w), 10.0), "pattern": torch.zeros(n, 7), "intensity": torch.zeros(n, 1)}


def test_evaluation_never_counts_the_pad(synth_small: Path) -> None:
    """A 192 x 256 image in one 256 px tile: metrics see the 192 image rows only."""
    from hep2edge.data.manifest import load_dataset
    from hep2edge.normalization import NormalizationSpec
    from hep2edge.train.evaluate import evaluate

    record = load_dataset(synth_small).records[0]
    tiles = build_tile_set([record], tile=256)
    result = evaluate(_AllForeground(), tiles, NormalizationSpec(), MultiTaskLoss(), 1, torch.device("cpu"))
    inside = tiles.masks[0, :192]
    assert result.levels["patch"]["pixel_accuracy"] == pytest.approx(inside.mean())
    assert result.levels["patch"]["dice"] == pytest.approx(2 * inside.sum() / (inside.sum() + inside.size))
