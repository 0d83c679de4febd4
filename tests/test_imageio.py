"""Image reading: 8/16-bit gray, RGB(A), TIFF/PNG/JPEG, multi-page TIFF, channel policies, every failure one error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from hep2edge.errors import ImageReadError, RegistryError
from hep2edge.imageio import (
    channel_policy_names,
    encode_mask_png,
    image_size,
    read_image,
    read_mask,
    write_image_png,
    write_image_tiff,
)

AGH_ANA = Path(__file__).parents[2] / "shared" / "data" / "agh-ana"
H, W = 24, 36


def _gray(dtype: type = np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return (np.random.default_rng(0).random((H, W)) * top).astype(dtype)


def _rgb() -> np.ndarray:
    g = _gray()
    return np.stack([g // 4, g, g // 2], axis=-1)  # R, G, B


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("writer", [write_image_tiff, write_image_png])
def test_gray_round_trip_keeps_dtype(tmp_path: Path, dtype: type, writer: object) -> None:
    image = _gray(dtype)
    path = writer(tmp_path / ("a.tif" if writer is write_image_tiff else "a.png"), image)  # type: ignore[operator]
    out = read_image(path)
    assert out.dtype == dtype and out.shape == (H, W)
    np.testing.assert_array_equal(out, image)
    assert image_size(path) == (H, W)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_rgb_channel_policies(tmp_path: Path, suffix: str) -> None:
    rgb = _rgb()
    path = (write_image_tiff if suffix == ".tif" else write_image_png)(tmp_path / f"c{suffix}", rgb)
    np.testing.assert_array_equal(read_image(path, "red"), rgb[..., 0])
    np.testing.assert_array_equal(read_image(path, "green"), rgb[..., 1])
    np.testing.assert_array_equal(read_image(path, "Blue "), rgb[..., 2])
    np.testing.assert_array_equal(read_image(path, "max"), rgb.max(-1))
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    lum = read_image(path, "luminance")
    assert lum.dtype == np.uint8
    assert np.abs(lum.astype(float) - expected).max() <= 1.0


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.concatenate([_rgb(), np.full((H, W, 1), 7, np.uint8)], axis=-1)
    for path in (write_image_png(tmp_path / "a.png", rgba), tmp_path / "a.tif"):
        if path.suffix == ".tif":
            tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
        np.testing.assert_array_equal(read_image(path, "green"), rgba[..., 1])
        assert read_image(path, "max").max() == rgba[..., :3].max()


def test_16bit_rgb_luminance_keeps_dtype(tmp_path: Path) -> None:
    rgb = np.stack([_gray(np.uint16)] * 3, axis=-1)
    path = write_image_png(tmp_path / "a.png", rgb)
    out = read_image(path)
    assert out.dtype == np.uint16
    assert np.abs(out.astype(int) - rgb[..., 0]).max() <= 1


def test_planar_and_multipage_tiff(tmp_path: Path) -> None:
    rgb = _rgb()
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif", "blue"), rgb[..., 2])
    first, second = _gray(), 255 - _gray()
    tifffile.imwrite(tmp_path / "pages.tif", np.stack([first, second]))
    with tifffile.TiffFile(tmp_path / "pages.tif") as tif:
        assert len(tif.pages) == 2
    np.testing.assert_array_equal(read_image(tmp_path / "pages.tif"), first)


def test_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    ramp = np.tile(np.linspace(0, 240, W).astype(np.uint8), (H, 1))
    rgb = np.stack([ramp // 4, ramp, ramp // 2], axis=-1)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    green = read_image(path, "green")
    assert green.shape == (H, W) and green.dtype == np.uint8
    assert np.abs(green.astype(int) - ramp).mean() < 4  # lossy, but green stays green
    assert image_size(path) == (H, W)


def test_read_mask(tmp_path: Path) -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[3:9, 4:20] = 255
    path = write_image_tiff(tmp_path / "m.tif", mask)
    out = read_mask(path)
    assert out.dtype == bool and out.sum() == 6 * 16
    np.testing.assert_array_equal(read_mask(write_image_png(tmp_path / "b.png", mask > 0)), mask > 0)


def _corrupt_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good_tif = write_image_tiff(tmp_path / "good.tif", _gray()).read_bytes()
    good_png = write_image_png(tmp_path / "good.png", _gray()).read_bytes()
    ok, jpg = cv2.imencode(".jpg", _gray())
    files = {
        "missing": (tmp_path / "missing.tif", "file not found"),
        "zero": (tmp_path / "zero.tif", "empty file"),
        "text": (tmp_path / "notes.png", "not an image"),
        "tif_truncated": (tmp_path / "cut.tif", "truncated TIFF"),
        "png_truncated": (tmp_path / "cut.png", "truncated PNG"),
        "jpg_truncated": (tmp_path / "cut.jpg", "truncated JPEG"),
        "tif_garbage": (tmp_path / "garbage.tif", "TIFF"),
        "png_garbage": (tmp_path / "garbage.png", "corrupt PNG"),
        "float32": (tmp_path / "float.tif", "32-bit float"),
        "int32": (tmp_path / "int.tif", "32-bit"),
        "bilevel": (tmp_path / "bits.tif", "1-bit"),
        "folder": (tmp_path / "folder.tif", "is a folder"),
    }
    files["zero"][0].write_bytes(b"")
    files["text"][0].write_text("hello, not an image\n")
    files["tif_truncated"][0].write_bytes(good_tif[: len(good_tif) // 2])
    files["png_truncated"][0].write_bytes(good_png[: len(good_png) // 2])
    files["jpg_truncated"][0].write_bytes(jpg.tobytes()[: len(jpg) // 2])
    files["tif_garbage"][0].write_bytes(b"II*\x00" + b"\xff" * 64)
    files["png_garbage"][0].write_bytes(good_png[:33] + b"\x00" * 40 + good_png[-12:])
    tifffile.imwrite(files["float32"][0], _gray().astype(np.float32))
    tifffile.imwrite(files["int32"][0], _gray().astype(np.uint32))
    tifffile.imwrite(files["bilevel"][0], _gray() > 100)  # bool is written as a 1-bit bilevel TIFF
    files["folder"][0].mkdir()
    return files


@pytest.mark.parametrize("values", ["bool", "0/1", "0/255"])
def test_mask_png_is_one_bit_and_reads_back_as_0_255(tmp_path: Path, values: str) -> None:
    mask = np.random.default_rng(1).random((H + 3, W + 5)) > 0.5
    given = {"bool": mask, "0/1": mask.astype(np.uint8), "0/255": mask.astype(np.uint8) * 255}[values]
    path = tmp_path / "m.png"
    path.write_bytes(encode_mask_png(given))
    assert Image.open(path).mode == "1"
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(read_mask(path), mask)
    with pytest.raises(ValueError, match="mask"):
        encode_mask_png(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("case", ["missing", "zero", "text", "tif_truncated", "png_truncated", "jpg_truncated",
                                  "tif_garbage", "png_garbage", "float32", "int32", "bilevel", "folder"])
def test_every_failure_is_one_image_read_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path, problem = _corrupt_files(tmp_path)[case]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert problem in message, message
    assert "\n" not in message


def test_pixel_limit(tmp_path: Path) -> None:
    path = write_image_png(tmp_path / "a.png", _gray())
    with pytest.raises(ImageReadError, match=r"36 x 24 pixels, over the limit of 100 pixels"):
        read_image(path, max_pixels=100)
    tif = write_image_tiff(tmp_path / "a.tif", _gray())
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(tif, max_pixels=H * W - 1)
    assert read_image(tif, max_pixels=H * W).shape == (H, W)


def test_unknown_channel_policy_lists_valid_names(tmp_path: Path) -> None:
    path = write_image_png(tmp_path / "a.png", _rgb())
    with pytest.raises(RegistryError, match="valid names: blue, green, luminance, max, red"):
        read_image(path, "purple")
    assert channel_policy_names() == ["blue", "green", "luminance", "max", "red"]


def test_writers_are_atomic_and_reject_bad_arrays(tmp_path: Path) -> None:
    write_image_tiff(tmp_path / "a.tif", _gray())
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]  # no temporary left behind
    with pytest.raises(ValueError):
        write_image_png(tmp_path / "f.png", np.zeros((4, 4), np.float32))


def test_real_agh_ana_fields_read_with_green_policy() -> None:
    folder = AGH_ANA / "images"
    if not folder.is_dir():
        pytest.skip(f"real images not found at {folder}")
    paths = sorted(folder.glob("*.png"))[:3]
    assert paths
    for path in paths:
        green = read_image(path, "green")
        assert green.dtype == np.uint8 and green.ndim == 2
        assert image_size(path) == green.shape
        assert green.mean() > read_image(path, "red").mean()  # the signal is in the green channel
        assert green.mean() > read_image(path, "blue").mean()
    assert read_image(paths[0]).shape == (966, 1296)


def test_lzw_tiff_reads_with_or_without_imagecodecs(tmp_path: Path) -> None:
    """Microscope TIFFs are often LZW-compressed; tifffile needs imagecodecs for that, OpenCV does not."""
    rgb = _rgb()
    path = tmp_path / "lzw.tif"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # OpenCV writes LZW
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == 5
    np.testing.assert_array_equal(read_image(path, "green"), rgb[..., 1])
    assert image_size(path) == (H, W)


def test_written_files_are_readable_by_others_like_plain_files(tmp_path: Path) -> None:
    """Atomic writes go through mkstemp (mode 0600); the result must get the usual umask mode instead."""
    import os

    path = write_image_tiff(tmp_path / "a.tif", _gray())
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
