"""The numpy preprocessing reference, and its CUDA twin against it (GPU machines only)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError, ImageReadError
from hep2edge.normalization import NormalizationSpec
from hep2edge.runtime.preprocess import (
    check_contract_channels,
    frame_to_batch,
    stitch_mask,
    threshold_masks,
    tile_foreground,
    to_gray,
)
from hep2edge.tiling import tile_grid

if TYPE_CHECKING:
    from hep2edge.runtime.cuda_preprocess import CudaPreprocessor

CONTRACT = ModelContract(tile=64)


def test_gray_frames_pass_and_rgb_follows_the_policy() -> None:
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 1] = 200
    assert to_gray(rgb[..., 1], "green") is not None
    np.testing.assert_array_equal(to_gray(rgb, "green"), 200)
    np.testing.assert_array_equal(to_gray(rgb, "red"), 0)
    assert to_gray(rgb, "luminance")[0, 0] == round(0.587 * 200)
    assert to_gray(np.zeros((4, 4, 1), np.uint16), "luminance").shape == (4, 4)


@pytest.mark.parametrize("frame", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8)])
def test_unsupported_frames_are_one_line(frame: np.ndarray) -> None:
    with pytest.raises(ImageReadError, match="cam#3: unsupported"):
        to_gray(frame, "luminance", "cam#3")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fixed_normalisation_by_hand(dtype: type) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, np.iinfo(dtype).max, (70, 97), dtype=dtype)
    batch, grid = frame_to_batch(gray, CONTRACT)
    assert batch.shape == (len(grid), 1, 64, 64) and batch.dtype == np.float32
    top, left = grid.positions[-1]
    expected = gray[top:top + 64, left:left + 64].astype(np.float32) / np.iinfo(dtype).max
    np.testing.assert_allclose(batch[-1, 0], expected, rtol=1e-6)


def test_small_frames_are_zero_padded_and_minmax_is_per_tile() -> None:
    contract = ModelContract(tile=64, normalization=NormalizationSpec("minmax", mean=0.5, std=0.25))
    gray = np.full((30, 41), 100, np.uint16)
    gray[0, 0] = 300
    batch, grid = frame_to_batch(gray, contract)
    assert len(grid) == 1
    tile = batch[0, 0]
    # pad (0) is the tile minimum, 300 its maximum: (x / 300 - 0.5) / 0.25
    assert tile[0, 0] == pytest.approx((1.0 - 0.5) / 0.25)
    assert tile[5, 5] == pytest.approx((100 / 300 - 0.5) / 0.25, rel=1e-6)
    assert tile[50, 50] == pytest.approx((0.0 - 0.5) / 0.25)


def test_threshold_stitch_and_foreground_ignore_the_pad() -> None:
    grid = tile_grid(50, 100, 64)  # two tiles across, padded to 64 rows
    probs = np.zeros((len(grid), 1, 64, 64), np.float16)
    probs[:, :, :, :] = 0.9  # every tile says foreground everywhere, pad included
    masks = threshold_masks(probs, 0.5)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) == {1}
    stitched = stitch_mask(masks, grid, "majority")
    assert stitched.shape == (50, 100) and stitched.dtype == np.uint8 and set(np.unique(stitched)) == {255}
    np.testing.assert_allclose(tile_foreground(masks, grid), 1.0)
    masks[0] = 0
    assert tile_foreground(masks, grid)[0] == 0.0
    assert stitch_mask(masks, grid, "or")[:, 0].max() == 0  # only tile 0 covers column 0
    assert stitch_mask(masks, grid, "majority")[:, 40].max() == 0  # tiles disagree on the overlap
    assert stitch_mask(masks, grid, "or")[:, 40].min() == 255


def test_tile_foreground_counts_the_in_image_part_only() -> None:
    grid = tile_grid(50, 100, 64)  # the bottom 14 rows of every tile are pad
    masks = (np.random.default_rng(2).random((len(grid), 64, 64)) > 0.3).astype(np.uint8)
    expected = [masks[i, :h, :w].astype(np.float64).mean() for i, (h, w) in enumerate(map(grid.valid_size,
                                                                                          range(len(grid))))]
    np.testing.assert_allclose(tile_foreground(masks, grid), expected, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="majority, or"):
        stitch_mask(masks, grid, "mean")


def test_threshold_is_strictly_greater() -> None:
    p = np.array([0.5, 0.5000001, 0.49], np.float32).reshape(1, 1, 1, 3)
    np.testing.assert_array_equal(threshold_masks(p, 0.5)[0, 0], [0, 1, 0])


def test_multichannel_models_are_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="1 gray channel"):
        check_contract_channels(ModelContract(tile=64, channels=3))


# --- the CUDA twin -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])  # Jetson Orin, H100
def test_cuda_kernels_compile_for_orin_and_hopper(tmp_path: Path, arch: str) -> None:
    """The kernel source compiles as pycuda will compile it (no extern "C" wrapper, --fmad=false), with every
    entry point the preprocessor looks up; runs wherever nvcc is, GPU or not."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH (the CUDA toolkit compiles the kernels on the machine that runs them)")
    from hep2edge.runtime.cuda_preprocess import KERNEL_NAMES, KERNELS

    source, ptx = tmp_path / "kernels.cu", tmp_path / "kernels.ptx"
    source.write_text(KERNELS)
    done = subprocess.run([nvcc, "--ptx", "--fmad=false", f"-arch={arch}", "-o", str(ptx), str(source)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(re.findall(r"\.entry\s+(\w+)", ptx.read_text())) == sorted(KERNEL_NAMES)


@pytest.fixture(scope="module")
def cuda_pre() -> type[CudaPreprocessor]:
    """pycuda + a GPU, else skip with the reason."""
    try:
        import pycuda.autoprimaryctx
        import pycuda.driver  # noqa: F401
    except Exception as exc:  # ImportError without pycuda, pycuda's LogicError/RuntimeError without a GPU
        pytest.skip(f"CUDA preprocessing needs pycuda and a GPU ({exc.__class__.__name__}: {exc})")
    from hep2edge.runtime.cuda_preprocess import CudaPreprocessor

    return CudaPreprocessor


def _gpu_cut(pre_cls: type[CudaPreprocessor], contract: ModelContract, gray: np.ndarray,
             out_dtype: type) -> np.ndarray:
    import pycuda.driver as cuda

    pre = pre_cls(contract)
    grid = tile_grid(int(gray.shape[0]), int(gray.shape[1]), contract.tile)
    out: np.ndarray = np.empty((len(grid), 1, contract.tile, contract.tile), out_dtype)
    device = cuda.mem_alloc(out.nbytes)
    try:
        pre.upload(gray)
        half = len(grid) // 2  # two calls, the second at an offset: the pipeline splits frames across batches
        pre.cut(grid, int(device), np.dtype(out_dtype), 0, half)
        pre.cut(grid, int(device) + half * out[0].nbytes, np.dtype(out_dtype), half, len(grid) - half)
        pre.stream.synchronize()
        cuda.memcpy_dtoh(out, device)
    finally:
        device.free()
        pre.close()
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mode", ["fixed", "minmax"])
def test_cuda_tiles_match_numpy(cuda_pre: type[CudaPreprocessor], dtype: type, out_dtype: type, mode: str) -> None:
    rng = np.random.default_rng()
    cases = [(64, (157, 203)), (64, (31, 45)), (64, (64, 129)), (160, (301, 517))]  # 160 > one block's threads
    for tile, shape in cases:
        contract = ModelContract(tile=tile, normalization=NormalizationSpec(mode, mean=0.2, std=0.7))
        gray = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
        expected, _ = frame_to_batch(gray, contract)
        got = _gpu_cut(cuda_pre, contract, gray, out_dtype)
        if out_dtype == np.float32:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float16).astype(np.float32),
                                       rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cuda_threshold_is_bit_exact(cuda_pre: type[CudaPreprocessor], dtype: type) -> None:
    import pycuda.driver as cuda

    rng = np.random.default_rng()
    probs: np.ndarray = rng.random((5, 1, 64, 64)).astype(dtype)
    probs.flat[::97] = 0.5  # exactly at the threshold
    pre = cuda_pre(CONTRACT)
    device = cuda.to_device(probs)
    try:
        got = pre.threshold(int(device), (5, 64, 64), np.dtype(dtype), 0.5)
    finally:
        device.free()
        pre.close()
    np.testing.assert_array_equal(got, threshold_masks(probs, 0.5))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_cuda_field_matches_numpy(cuda_pre: type[CudaPreprocessor], dtype: type, out_dtype: type) -> None:
    """The whole-field kernel against runtime.field.field_input: the pad is normalised too (-mean / std)."""
    import pycuda.driver as cuda

    from hep2edge.runtime.field import field_input, field_shape

    rng = np.random.default_rng()
    contract = ModelContract(tile=64, normalization=NormalizationSpec("fixed", mean=0.2, std=0.7)).with_field_outputs()
    for shape in ((157, 203), (64, 129), (1040, 1388)):
        gray = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
        expected = field_input(gray, contract)
        padded = field_shape(*shape, contract.field_stride)
        out: np.ndarray = np.empty((1, 1, *padded), out_dtype)
        pre, device = cuda_pre(contract), cuda.mem_alloc(out.nbytes)
        try:
            pre.upload(gray)
            pre.field(int(device), np.dtype(out_dtype), padded)
            pre.stream.synchronize()
            cuda.memcpy_dtoh(out, device)
        finally:
            device.free()
            pre.close()
        if out_dtype == np.float32:
            np.testing.assert_array_equal(out, expected)
        else:
            np.testing.assert_array_equal(out, expected.astype(np.float16))
