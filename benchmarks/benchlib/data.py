"""Real inputs for the benchmarks: synthetic HEp-2 fields, their normalised tiles, unique copies for a watch.

Never zeros or random noise: timings run on the tiles the product would see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hep2edge.contract import ModelContract
from hep2edge.imageio import read_image, write_image_tiff
from hep2edge.runtime.preprocess import frame_to_batch
from hep2edge.synth.writer import SynthConfig, synthesize_dataset
from hep2edge.tiling import tile_grid

MIN_PATIENTS = 7  # one per pattern


def synth_pool(folder: Path, images: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """`images` synthetic fields of `size` (H, W), one per patient (at least 7), written once into `folder`."""
    if not (folder / "labels.csv").is_file():
        synthesize_dataset(SynthConfig(out=folder, patients=max(images, MIN_PATIENTS), images_per_patient=1,
                                       size=size, seed=seed))
    return sorted(p for p in folder.glob("*_p1.tif"))[: max(images, 1)]


def tiles_per_image(size: tuple[int, int], tile: int) -> int:
    """How many tiles the runtime cuts from one (H, W) image (15 for 1040 x 1388 at 384)."""
    return len(tile_grid(size[0], size[1], tile))


def image_tiles(images: list[Path], contract: ModelContract) -> np.ndarray:
    """(N, C, t, t) float32: every tile of `images`, normalised as the runtime does it."""
    batches = [frame_to_batch(read_image(path, contract.channel_policy), contract)[0] for path in images]
    return np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)


def image_fields(images: list[Path], contract: ModelContract) -> list[np.ndarray]:
    """Per image, the (1, C, Hp, Wp) float32 whole-field input the runtime feeds in `--inference field`."""
    from hep2edge.runtime.field import field_input

    return [field_input(read_image(path, contract.channel_policy), contract) for path in images]


def cycled_batches(tiles: np.ndarray, batch: int, count: int = 4) -> list[np.ndarray]:
    """`count` different batches of `batch` tiles taken round the pool (so no call sees the same input twice
    in a row, and a batch larger than the pool repeats tiles rather than padding with zeros)."""
    n = len(tiles)
    step = max(1, n // count)
    return [np.ascontiguousarray(tiles[np.arange(k * step, k * step + batch) % n]) for k in range(count)]


def stamp(image: np.ndarray, serial: int) -> np.ndarray:
    """A copy of `image` whose first pixels encode `serial`: a different content hash, the same work."""
    out = image.copy()
    digits = np.frombuffer(int(serial).to_bytes(4, "little"), dtype=np.uint8)
    out.reshape(-1)[:4] = digits.astype(out.dtype)
    return out


def specimen_name(serial: int, per_specimen: int = 4) -> str:
    """I3A-style names, 4 images per specimen: 00001_p1 ... 00001_p4, 00002_p1, ..."""
    return f"{serial // per_specimen + 1:05d}_p{serial % per_specimen + 1}"


def unique_copies(pool: list[Path], folder: Path, count: int) -> list[Path]:
    """`count` TIFFs in `folder`, cycling over `pool`, each with its own content (see `stamp`)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [read_image(path) for path in pool]
    paths = []
    for serial in range(count):
        path = folder / f"{specimen_name(serial)}.tif"
        write_image_tiff(path, stamp(images[serial % len(images)], serial))
        paths.append(path)
    return paths
