"""Reading I3A Task 2 style datasets: both manifest forms, messy labels, paths, patients, helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hep2edge.data.manifest import (
    Dataset,
    ImageRecord,
    find_manifest,
    load_dataset,
    mask_path_for,
    patient_from_name,
)
from hep2edge.errors import DataError
from hep2edge.imageio import write_image_tiff

LABELS = {1: ("homogeneous", "intermediate"), 2: ("speckled", "positive"), 3: ("numem", "positive")}


def make_images(root: Path, patients: dict[int, tuple[str, str]] = LABELS, per: int = 2) -> list[str]:
    """Tiny 8 x 10 images + masks named as in I3A; returns the image stems."""
    stems = []
    for patient in patients:
        for k in range(1, per + 1):
            stem = f"{patient:05d}_p{k}"
            write_image_tiff(root / f"{stem}.tif", np.full((8, 10), 10 * patient, np.uint8))
            write_image_tiff(root / f"{stem}_Mask.tif", np.full((8, 10), 255, np.uint8))
            stems.append(stem)
    return stems


def header_csv(root: Path, name: str = "labels.csv") -> Path:
    lines = ["image,mask,patient,pattern,intensity"]
    for stem in make_images(root):
        pattern, intensity = LABELS[int(stem[:5])]
        lines.append(f"{stem}.tif,{stem}_Mask.tif,{stem[:5]},{pattern},{intensity}")
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_header_form(tmp_path: Path) -> None:
    header_csv(tmp_path)
    data = load_dataset(tmp_path)
    assert isinstance(data, Dataset) and len(data) == 6
    first = data.records[0]
    assert first == ImageRecord(tmp_path / "00001_p1.tif", tmp_path / "00001_p1_Mask.tif", "00001", 0, 0, 2)
    assert data.manifest == tmp_path / "labels.csv"
    assert data.patients() == ["00001", "00002", "00003"]
    assert [r.image.name for r in data.by_patient()["00002"]] == ["00002_p1.tif", "00002_p2.tif"]
    assert data.pattern_counts() == {"homogeneous": 2, "speckled": 2, "nucleolar": 0, "centromere": 0,
                                     "golgi": 0, "numem": 2, "mitsp": 0}
    assert data.pattern_counts("patient")["numem"] == 1
    assert data.intensity_counts() == {"intermediate": 2, "positive": 4}
    assert data.intensity_counts("patient") == {"intermediate": 1, "positive": 2}


def test_headerless_public_form_with_messy_labels(tmp_path: Path) -> None:
    """`Image, Mask, Label, Intensity` without a header; labels with spaces, any case, or numbers."""
    make_images(tmp_path)
    rows = [
        "00001_p1.tif, 00001_p1_Mask.tif, Homogeneous , intermediate",
        "00001_p2.tif,00001_p2_Mask.tif,HOMOGENEOUS,0",
        "",
        "00002_p1.tif,00002_p1_Mask.tif,speckled  ,Positive ",
        "00002_p2.tif,00002_p2_Mask.tif,1,1",
        "00003_p1.tif,00003_p1_Mask.tif,5,positive",
        "00003_p2.tif,00003_p2_Mask.tif,nuclear membrane,POSITIVE",
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(tmp_path)
    assert [(r.pattern, r.intensity) for r in data.records] == [(0, 0), (0, 0), (1, 1), (1, 1), (5, 1), (5, 1)]
    assert [r.line for r in data.records] == [1, 2, 4, 5, 6, 7]
    assert data.records[2].patient == "00002"  # from the file name


def test_header_aliases_case_and_spaces(tmp_path: Path) -> None:
    make_images(tmp_path, {7: ("golgi", "positive")}, per=1)
    (tmp_path / "labels.csv").write_text(" Image , MASK,Label , Intensity,Patient ID\n"
                                         "00007_p1.tif,00007_p1_Mask.tif, Golgi,positive , P7\n")
    record = load_dataset(tmp_path).records[0]
    assert (record.pattern, record.intensity, record.patient) == (4, 1, "P7")


def test_paths_relative_bare_absolute_and_inferred_mask(tmp_path: Path) -> None:
    sub = tmp_path / "images"
    sub.mkdir()
    make_images(sub, {1: ("centromere", "positive")}, per=2)
    (tmp_path / "labels.csv").write_text(
        "image,mask,pattern,intensity\n"
        f"images/00001_p1.tif,images\\00001_p1_Mask.tif,centromere,positive\n"
        f"{sub / '00001_p2.tif'},,centromere,positive\n"
    )
    data = load_dataset(tmp_path)
    assert data.records[0].image == sub / "00001_p1.tif"
    assert data.records[0].mask == sub / "00001_p1_Mask.tif"  # Windows separators accepted
    assert data.records[1].mask == sub / "00001_p2_Mask.tif"  # empty mask cell: the I3A name is found
    # a bare name resolves in the dataset folder
    make_images(tmp_path, {2: ("golgi", "positive")}, per=1)
    (tmp_path / "labels.csv").write_text("image,mask,pattern,intensity\nx/00002_p1.tif,,golgi,positive\n")
    assert load_dataset(tmp_path).records[0].image == tmp_path / "00002_p1.tif"


def test_no_mask_is_none(tmp_path: Path) -> None:
    write_image_tiff(tmp_path / "field.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "labels.csv").write_text("image,pattern,intensity\nfield.tif,golgi,positive\n")
    record = load_dataset(tmp_path).records[0]
    assert record.mask is None and record.patient == "field"


def test_names() -> None:
    assert patient_from_name(Path("00012_p3.tif")) == "00012"
    assert patient_from_name(Path("slide_a.tif")) == "slide_a"
    assert mask_path_for(Path("/d/00012_p3.tif")) == Path("/d/00012_p3_Mask.tif")


def test_manifest_discovery(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        find_manifest(tmp_path / "nope")
    with pytest.raises(DataError, match="folder is empty"):
        find_manifest(tmp_path)
    (tmp_path / "a.csv").write_text("x")
    assert find_manifest(tmp_path) == tmp_path / "a.csv"
    (tmp_path / "b.csv").write_text("x")
    with pytest.raises(DataError, match=r"several CSV files \(a.csv, b.csv\)"):
        find_manifest(tmp_path)
    (tmp_path / "labels.csv").write_text("x")
    assert find_manifest(tmp_path) == tmp_path / "labels.csv"
    assert find_manifest(tmp_path, "b.csv") == tmp_path / "b.csv"
    with pytest.raises(DataError, match="c.csv: manifest not found"):
        find_manifest(tmp_path, "c.csv")


def test_load_dataset_lists_every_problem(tmp_path: Path) -> None:
    header_csv(tmp_path)
    text = (tmp_path / "labels.csv").read_text().replace("speckled", "spekled", 1)
    (tmp_path / "labels.csv").write_text(text + "00009_p1.tif,00009_p1_Mask.tif,00009,golgi,positive\n")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "labels.csv:4: unknown pattern label 'spekled'" in message
    assert "labels.csv:8: image 00009_p1.tif not found" in message
    assert "labels.csv:8: mask 00009_p1_Mask.tif not found" in message


def test_load_dataset_problems_come_in_line_order(tmp_path: Path) -> None:
    header_csv(tmp_path)
    (tmp_path / "00001_p1.tif").unlink()  # line 2: a file problem, found after the label problems
    text = (tmp_path / "labels.csv").read_text().replace("numem", "nucleus")  # lines 6 and 7
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert [line.split(":")[1] for line in lines] == ["2", "6", "7"], lines
