"""The export's whole-field check (export/field_check.py) with a pixel-local numpy 'network' run both ways."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hep2edge.contract import ModelContract
from hep2edge.export.config import Limits
from hep2edge.export.field_check import FieldCheck, agreement, run_field_check
from hep2edge.export.report import field_check_line
from hep2edge.export.tiles import DataSelection, TileSet, verification_tiles
from hep2edge.normalization import NormalizationSpec

CONTRACT = ModelContract(tile=64).with_field_outputs()
STRIDE = CONTRACT.field_stride


def cell_logits(x: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) input -> (N, 7, H/32, W/32): logits from each 32 px cell's mean brightness."""
    n, _, h, w = x.shape
    means = x.reshape(n, h // STRIDE, STRIDE, w // STRIDE, STRIDE).mean(axis=(2, 4))
    return -((means[:, None] * 40.0 - np.arange(7)[None, :, None, None]) ** 2)


def field_rule(x: np.ndarray) -> dict[str, np.ndarray]:
    """A pixel-local mask and cell-local heads: whole field and tiles must then agree exactly."""
    logits = cell_logits(x)
    return {"mask": np.clip(x * 8.0, 0, 1).astype(np.float32), "pattern_logits": logits,
            "intensity_logits": logits[:, :1] / 10.0}


def tile_rule(images: np.ndarray) -> dict[str, np.ndarray]:
    """The same rule in tile mode: heads are the tile's mean cell logits, activated."""
    logits = cell_logits(images).mean(axis=(2, 3))
    pattern = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"mask": np.clip(images * 8.0, 0, 1).astype(np.float32),
            "pattern": (pattern / pattern.sum(axis=1, keepdims=True)).astype(np.float32),
            "intensity": (1 / (1 + np.exp(-logits[:, :1] / 10.0))).astype(np.float32)}


@pytest.fixture(scope="module")
def tiles(synth_small: Path) -> TileSet:
    return verification_tiles(DataSelection(synth_small, None, "test"), CONTRACT, 3, 0)


def test_the_same_rule_both_ways_agrees_exactly_and_is_within_limits(tiles: TileSet) -> None:
    check = run_field_check(field_rule, tile_rule(tiles.images), tiles, CONTRACT, Limits())
    assert check.images == 3 and check.largest == (192, 256) and not check.skipped
    assert check.mask_dice_vs_tiles == pytest.approx(1.0) and check.pattern_agreement == 1.0
    assert check.field_metrics == pytest.approx(check.tile_metrics, abs=1e-9)
    assert check.within_limits and "may be used" in field_check_line(check)
    assert "of 3 images up to 256 x 192" in field_check_line(check)


def test_a_field_pass_that_loses_the_mask_is_outside_the_limits(tiles: TileSet) -> None:
    def shrunk(x: np.ndarray) -> dict[str, np.ndarray]:
        out = field_rule(x)
        return out | {"mask": out["mask"] * 0.5}  # fewer pixels over the 0.5 threshold

    check = run_field_check(shrunk, tile_rule(tiles.images), tiles, CONTRACT, Limits())
    assert check.mask_dice_vs_tiles < 0.99
    assert not check.within_limits and check.failures[0].startswith("dice drops by")
    assert "keep --inference tiles" in field_check_line(check.to_dict())


def test_minmax_models_and_small_images_are_skipped_with_the_reason(tiles: TileSet) -> None:
    minmax = replace(CONTRACT, normalization=NormalizationSpec(mode="minmax"))
    check = run_field_check(field_rule, tile_rule(tiles.images), tiles, minmax, Limits())
    assert "normalises each tile by its own range" in check.skipped and not check.within_limits
    large = replace(CONTRACT, tile=320)  # every 192 x 256 held-out image is smaller than one tile
    assert "at least one 320 px tile" in run_field_check(field_rule, {}, tiles, large, Limits()).skipped
    assert field_check_line(FieldCheck(skipped="why")) == "whole field not checked: why"


def test_agreement_is_mask_dice_inside_the_image_and_the_share_of_same_verdicts() -> None:
    valid = np.ones((4, 2, 2), dtype=bool)
    valid[3, 1] = False  # the pad of a tile that overhangs its image never counts
    masks = np.zeros((4, 1, 2, 2), dtype=np.float32)
    other = masks.copy()
    masks[:, 0, 0, 0] = other[:, 0, 0, 0] = 1.0
    other[3, 0, 1, 1] = 1.0  # in the pad
    pattern = np.eye(7, dtype=np.float32)[[0, 0, 1, 1]]
    flipped = np.eye(7, dtype=np.float32)[[0, 0, 2, 2]]
    ids = np.array(["a", "a", "b", "b"])
    got = agreement({"mask": masks, "pattern": pattern}, {"mask": other, "pattern": flipped}, valid, ids, 0.5)
    assert got == {"mask_dice": 1.0, "pattern_agreement": 0.5}
