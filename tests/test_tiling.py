"""The tile grid and stitching: the seed grid exactly, fewest covering tiles, padding, exact round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hep2edge.tiling import (
    STITCHERS,
    axis_starts,
    extract_tiles,
    pad_to_grid,
    stitch_majority,
    stitch_mean,
    stitch_or,
    tile_grid,
)


def test_seed_grid_is_exact() -> None:
    grid = tile_grid(1040, 1388, 384)
    assert grid.lefts == tuple(251 * i for i in range(5))
    assert grid.tops == tuple(328 * j for j in range(3))
    assert len(grid) == 15
    assert grid.positions[:6] == [(0, 0), (0, 251), (0, 502), (0, 753), (0, 1004), (328, 0)]
    assert grid.padded_shape == (1040, 1388)


@pytest.mark.parametrize("length", [385, 500, 767, 768, 769, 1000, 1296, 2048])
@pytest.mark.parametrize("tile", [64, 128, 384])
def test_fewest_tiles_cover_evenly(length: int, tile: int) -> None:
    starts = axis_starts(length, tile)
    fewest = math.ceil(length / tile)
    assert fewest <= len(starts) <= fewest + 1
    assert starts[0] == 0 and starts[-1] + tile == length  # covers both ends, never past the image
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= tile).all()  # no hole between tiles
    assert gaps.max() - gaps.min() <= 1  # spread evenly


@pytest.mark.parametrize("length", [500, 1040, 1388])
@pytest.mark.parametrize(("tile", "overlap"), [(128, 1), (128, 32), (128, 64), (384, 96), (64, 63)])
def test_fewest_tiles_that_overlap_by_at_least_the_minimum(length: int, tile: int, overlap: int) -> None:
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (tile - gaps >= overlap).all()
    fewest = math.ceil((length - tile) / (tile - overlap)) + 1  # fewer would need a stride beyond tile - overlap
    assert fewest <= len(starts) <= fewest + 1
    assert axis_starts(length, tile, 0) == axis_starts(length, tile)


@pytest.mark.parametrize("overlap", [-1, 128, 500])
def test_an_overlap_outside_the_tile_raises(overlap: int) -> None:
    with pytest.raises(ValueError, match="tile overlap"):
        axis_starts(1000, 128, overlap)


def test_extra_tile_only_for_a_whole_stride() -> None:
    assert axis_starts(1388, 384) == [0, 251, 502, 753, 1004]  # 4 would do; 5 gives a whole stride
    starts = axis_starts(1000, 384)
    assert len(starts) == 3 and starts == [0, 308, 616]


@pytest.mark.parametrize("length", [1, 50, 384])
def test_short_axis_gets_one_tile(length: int) -> None:
    assert axis_starts(length, 384) == [0]


@pytest.mark.parametrize("length, tile", [(0, 10), (10, 0), (-3, 4)])
def test_bad_lengths_raise(length: int, tile: int) -> None:
    with pytest.raises(ValueError):
        axis_starts(length, tile)


def test_small_image_is_padded_and_pad_never_counts() -> None:
    image = np.full((40, 50), 7, np.uint8)
    grid = tile_grid(40, 50, 64)
    assert len(grid) == 1 and grid.padded_shape == (64, 64)
    assert grid.valid_size(0) == (40, 50)
    tiles = extract_tiles(image, grid)
    assert tiles.shape == (1, 64, 64)
    assert (tiles[0, :40, :50] == 7).all() and (tiles[0, 40:] == 0).all() and (tiles[0, :, 50:] == 0).all()
    everything = np.ones((1, 64, 64), bool)  # a model that says "foreground" on the pad too
    assert stitch_or(everything, grid).shape == (40, 50)
    assert stitch_majority(everything, grid).sum() == 40 * 50
    assert stitch_mean(everything.astype(np.float32), grid).shape == (40, 50)


def test_pad_to_grid_checks_shape_and_keeps_channels() -> None:
    grid = tile_grid(10, 20, 16)
    padded = pad_to_grid(np.ones((10, 20, 3), np.uint8), grid)
    assert padded.shape == (16, 20, 3)
    with pytest.raises(ValueError):
        pad_to_grid(np.ones((11, 20)), grid)


@pytest.mark.parametrize("shape", [(97, 131), (1040, 1388), (33, 200), (257, 129)])
def test_extract_then_stitch_mean_is_identity(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape).astype(np.float32)
    grid = tile_grid(*shape, 64 if shape[0] < 1000 else 384)
    tiles = extract_tiles(image, grid)
    np.testing.assert_array_equal(stitch_mean(tiles, grid), image)


@pytest.mark.parametrize("shape", [(97, 131), (61, 203)])
def test_binary_stitchers_round_trip(shape: tuple[int, int]) -> None:
    mask = np.random.default_rng(3).random(shape) > 0.5
    grid = tile_grid(*shape, 48)
    tiles = extract_tiles(mask, grid)
    for name in ("or", "majority"):
        np.testing.assert_array_equal(STITCHERS[name](tiles, grid), mask)


def test_majority_and_or_differ_where_tiles_disagree() -> None:
    grid = tile_grid(10, 14, 10)  # two tiles overlapping in columns 4..9
    assert grid.lefts == (0, 4)
    tiles = np.zeros((2, 10, 10), bool)
    tiles[0] = True  # first tile says foreground everywhere, second says background
    union, major = stitch_or(tiles, grid), stitch_majority(tiles, grid)
    assert union[:, :10].all() and not union[:, 10:].any()
    assert major[:, :4].all() and not major[:, 4:].any()  # 1 of 2 votes is not a majority
    mean = stitch_mean(tiles.astype(np.float32), grid)
    np.testing.assert_allclose(mean[0], [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0])


def test_stitch_rejects_wrong_tile_count() -> None:
    grid = tile_grid(100, 100, 64)
    with pytest.raises(ValueError):
        stitch_mean(np.zeros((1, 64, 64)), grid)


@pytest.mark.parametrize(("shape", "tile"), [((1040, 1388), 384), ((97, 131), 48), ((30, 200), 64), ((301, 77), 32)])
def test_binary_stitchers_match_the_vote_fraction(shape: tuple[int, int], tile: int) -> None:
    """The integer vote counts agree with the float mean of disagreeing random tiles (ties are not a majority)."""
    grid = tile_grid(*shape, tile)
    tiles = (np.random.default_rng(len(grid)).random((len(grid), tile, tile)) > 0.5).astype(np.uint8)
    fraction = stitch_mean(tiles.astype(np.float32), grid)
    np.testing.assert_array_equal(stitch_majority(tiles, grid), fraction > 0.5)
    np.testing.assert_array_equal(stitch_or(tiles * 7, grid), fraction > 0)  # any non-zero value is a vote


@pytest.mark.parametrize(("height", "width", "tile"), [(150, 200, 64), (1040, 1388, 128), (40, 50, 64)])
def test_inner_stitching_takes_each_pixel_from_the_tile_whose_centre_is_nearest(height: int, width: int,
                                                                                 tile: int) -> None:
    from hep2edge.tiling import stitch_inner_channels

    grid = tile_grid(height, width, tile)
    ids = np.arange(len(grid), dtype=np.int32)
    tiles = np.broadcast_to(ids[:, None, None, None], (len(grid), 2, tile, tile)).copy()
    stitched = stitch_inner_channels(tiles, grid)
    assert stitched.shape == (2, height, width) and stitched.dtype == np.int32

    def nearest(starts: tuple[int, ...], length: int) -> np.ndarray:  # ties: the later tile
        centres = np.array(starts) + tile / 2
        gap = np.abs(np.arange(length)[:, None] + 0.5 - centres[None, ::-1])
        return len(starts) - 1 - gap.argmin(axis=1)

    expected = nearest(grid.tops, height)[:, None] * len(grid.lefts) + nearest(grid.lefts, width)[None, :]
    np.testing.assert_array_equal(stitched[0], expected)
    np.testing.assert_array_equal(stitched[1], expected)
    with pytest.raises(ValueError, match="C, 64, 64"):
        stitch_inner_channels(tiles[:, 0], tile_grid(height, width, 64))
