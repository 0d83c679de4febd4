"""The synthetic generator: exact I3A format, deterministic per seed, every pattern covered, masks mark cells."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hep2edge.cli.app import app
from hep2edge.data.manifest import load_dataset
from hep2edge.data.validate import validate_dataset
from hep2edge.errors import ConfigError
from hep2edge.imageio import read_image, read_mask
from hep2edge.labels import PATTERNS
from hep2edge.synth.field import PatientStyle, compose_field
from hep2edge.synth.writer import SynthConfig, parse_size, patient_labels, synthesize_dataset


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_format_round_trip(synth_small: Path) -> None:
    report = validate_dataset(synth_small)
    assert report.ok, report.lines()
    summary = report.summary()
    assert summary["patients"] == 7 and summary["images"] == 14
    assert all(counts["patients"] == 1 for counts in summary["patterns"].values())  # 7 patients: every pattern
    data = load_dataset(synth_small)
    assert [r.image.name for r in data.records[:2]] == ["00001_p1.tif", "00001_p2.tif"]
    assert data.records[0].mask == synth_small / "00001_p1_Mask.tif"
    assert data.patients() == [f"{i:05d}" for i in range(1, 8)]
    with open(synth_small / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image", "mask", "patient", "pattern", "intensity"]
    assert rows[1][3] in PATTERNS and rows[1][4] in ("intermediate", "positive")
    config = yaml.safe_load((synth_small / "config.yaml").read_text())
    assert config == {"out": str(synth_small), "patients": 7, "images_per_patient": 2, "size": [192, 256], "seed": 1}


def test_images_and_masks(synth_small: Path) -> None:
    for record in load_dataset(synth_small).records[::3]:
        image, mask = read_image(record.image), read_mask(record.mask)  # type: ignore[arg-type]
        assert image.dtype == np.uint8 and image.shape == (192, 256) and mask.shape == image.shape
        raw_mask = read_image(record.mask)  # type: ignore[arg-type]
        assert set(np.unique(raw_mask)) <= {0, 255}
        assert 0.1 < mask.mean() < 0.95  # cells and background both present
        assert image[mask].mean() > image[~mask].mean()  # the mask marks the stained cells


def test_deterministic_per_seed(tmp_path: Path) -> None:
    config = SynthConfig(out=tmp_path / "a", patients=2, images_per_patient=1, size=(96, 128), seed=5)
    synthesize_dataset(config)
    synthesize_dataset(SynthConfig(out=tmp_path / "b", patients=2, images_per_patient=1, size=(96, 128), seed=5))
    synthesize_dataset(SynthConfig(out=tmp_path / "c", patients=2, images_per_patient=1, size=(96, 128), seed=6))
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    a.pop("config.yaml"), b.pop("config.yaml"), c.pop("config.yaml")
    assert a == b
    assert a["00001_p1.tif"] != c["00001_p1.tif"]


def test_regenerating_into_the_same_folder_is_allowed_but_not_into_a_foreign_one(tmp_path: Path) -> None:
    config = SynthConfig(out=tmp_path / "d", patients=1, images_per_patient=1, size=(64, 64))
    assert synthesize_dataset(config) == tmp_path / "d"
    synthesize_dataset(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.docx").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        synthesize_dataset(SynthConfig(out=tmp_path / "other", patients=1))


def test_patient_labels_cover_patterns_and_are_seeded() -> None:
    labels = patient_labels(7, seed=0)
    assert sorted(p for p, _ in labels) == list(range(7))
    assert patient_labels(21, 3) == patient_labels(21, 3) != patient_labels(21, 4)
    counts = np.bincount([p for p, _ in patient_labels(70, 1)], minlength=7)
    assert (counts == 10).all()
    intensities = [i for _, i in patient_labels(200, 2)]
    assert 0.3 < np.mean(intensities) < 0.6


@pytest.mark.parametrize("text, size", [("1040x1388", (1040, 1388)), (" 64 X 80 ", (64, 80)), ("100,120", (100, 120))])
def test_parse_size(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1040", "axb", "10x10", "1040x1388x3", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("field, value", [("patients", 0), ("images_per_patient", 0), ("size", (10, 200))])
def test_config_checks(tmp_path: Path, field: str, value: object) -> None:
    config = SynthConfig(**{"out": tmp_path, "patients": 1, field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        config.check()


def test_intensity_class_changes_brightness_and_snr() -> None:
    means = {}
    for intensity in (0, 1):
        style = PatientStyle(pattern=0, intensity=intensity, gain=1.0, variant=0.5, cell_diameter=54.0)
        image, mask = compose_field(np.random.default_rng(4), 160, 200, style)
        means[intensity] = image[mask].mean() - image[~mask].mean()
    assert means[1] > 1.5 * means[0]


def test_spindle_pattern_always_shows_a_mitosis() -> None:
    style = PatientStyle(pattern=PATTERNS.index("mitsp"), intensity=1, gain=1.0, variant=0.5, cell_diameter=54.0)
    for seed in range(4):
        image, mask = compose_field(np.random.default_rng(seed), 128, 128, style)
        assert image.max() > 4 * np.median(image[mask])  # bright spindle poles over faint interphase nuclei


def test_synth_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", str(out), "--patients", "2", "--images-per-patient", "1",
                                      "--size", "64x96", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "synth resolved" in result.output and "seed: 2" in result.output
    assert validate_dataset(out).ok
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--patients", "2", "--size", "64by96"])
    assert bad.exit_code != 0
    missing = CliRunner().invoke(app, ["synth", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "pass --patients or set synth.patients" in missing.output
    (tmp_path / "afile").write_text("x")
    clash = CliRunner().invoke(app, ["synth", str(tmp_path / "afile"), "--patients", "1"])
    assert isinstance(clash.exception, ConfigError) and "exists and is not a folder" in str(clash.exception)
    assert "synth resolved" not in clash.output  # refused before anything is printed or written
