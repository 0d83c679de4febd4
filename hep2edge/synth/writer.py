"""Write a synthetic dataset in the I3A Task 2 layout that `hep2edge.data` reads.

`{patient:05d}_p{k}.tif` (8-bit gray) + `{stem}_Mask.tif` (0/255) + `{stem}_Labels.tif` (uint16 instance ids,
0 = background, 1..n one per cell; found by its name, so `labels.csv` keeps its columns) + `labels.csv` (image,
mask, patient, pattern, intensity) + `config.yaml` (the resolved SynthConfig). Deterministic per seed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hep2edge.atomic import atomic_write_text
from hep2edge.data.manifest import DEFAULT_MANIFEST, labels_path_for
from hep2edge.errors import ConfigError
from hep2edge.imageio import write_image_tiff, write_labels_tiff
from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.synth.field import PatientStyle, compose_field_instances
from hep2edge.workspace import write_resolved_config

MIN_SIDE = 32
POSITIVE_SHARE = 110 / 252  # as in the public set


@dataclass(frozen=True)
class SynthConfig:
    """What `hep2edge synth` resolved: output folder, patients, images per patient, (H, W), seed."""

    out: Path
    patients: int
    images_per_patient: int = 4
    size: tuple[int, int] = (1040, 1388)
    seed: int = 0

    def check(self) -> None:
        if self.patients < 1:
            raise ConfigError(f"patients must be at least 1, got {self.patients}")
        if self.images_per_patient < 1:
            raise ConfigError(f"images per patient must be at least 1, got {self.images_per_patient}")
        if len(self.size) != 2 or min(self.size) < MIN_SIDE:
            raise ConfigError(f"size must be two sides of at least {MIN_SIDE} px, got {self.size}")
        _check_out(Path(self.out))


def parse_size(text: str) -> tuple[int, int]:
    """'1040x1388' (H x W) -> (1040, 1388); ConfigError on anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(text))
    if not match:
        raise ConfigError(f"invalid size {text!r}: expected HEIGHTxWIDTH, e.g. 1040x1388")
    size = (int(match.group(1)), int(match.group(2)))
    if min(size) < MIN_SIDE:
        raise ConfigError(f"invalid size {text!r}: each side must be at least {MIN_SIDE} px")
    return size


def patient_labels(patients: int, seed: int) -> list[tuple[int, int]]:
    """(pattern, intensity) per patient: patterns cycle over the 7 classes then are shuffled by seed."""
    rng = np.random.default_rng([seed, 7])
    patterns = np.arange(patients) % len(PATTERNS)
    rng.shuffle(patterns)
    intensities = (rng.random(patients) < POSITIVE_SHARE).astype(int)
    return [(int(p), int(i)) for p, i in zip(patterns, intensities)]


def image_rng(seed: int, patient: int, k: int) -> np.random.Generator:
    """The generator of image k (1-based) of a patient; k = 0 draws the patient's style."""
    return np.random.default_rng([seed, patient, k])


def render_image(config: SynthConfig, patient: int, k: int, labels: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image k of `patient` (1-based ids): ((H, W) uint8, (H, W) bool mask)."""
    image, mask, _ = render_instances(config, patient, k, labels)
    return image, mask


def render_instances(
    config: SynthConfig, patient: int, k: int, labels: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image k of `patient`: ((H, W) uint8, (H, W) bool mask, (H, W) uint16 cell ids with ids > 0 == mask)."""
    style = PatientStyle.draw(image_rng(config.seed, patient, 0), *labels)
    return compose_field_instances(image_rng(config.seed, patient, k), config.size[0], config.size[1], style)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DEFAULT_MANIFEST).exists():
        raise ConfigError(f"{out}: folder is not empty and holds no {DEFAULT_MANIFEST}; choose an empty folder")


def synthesize_dataset(config: SynthConfig, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the dataset described by `config`; returns its folder. `progress(done, total)` after each image."""
    config.check()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = patient_labels(config.patients, config.seed)
    rows: list[list[str]] = []
    total, done = config.patients * config.images_per_patient, 0
    for index, (pattern, intensity) in enumerate(labels):
        patient = index + 1
        for k in range(1, config.images_per_patient + 1):
            stem = f"{patient:05d}_p{k}"
            image, mask, ids = render_instances(config, patient, k, (pattern, intensity))
            write_image_tiff(out / f"{stem}.tif", image)
            write_image_tiff(out / f"{stem}_Mask.tif", mask.astype(np.uint8) * 255)
            write_labels_tiff(labels_path_for(out / f"{stem}.tif"), ids)
            rows.append([f"{stem}.tif", f"{stem}_Mask.tif", f"{patient:05d}",
                         PATTERNS[pattern], INTENSITIES[intensity]])
            done += 1
            if progress is not None:
                progress(done, total)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "mask", "patient", "pattern", "intensity"])
    writer.writerows(rows)
    manifest = out / DEFAULT_MANIFEST
    atomic_write_text(manifest, buffer.getvalue())
    write_resolved_config(out, config)
    return out
