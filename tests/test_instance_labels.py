"""Instance label images: synth writes them, the manifest finds them, `check` validates them and cells.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_manifest import header_csv

from hep2edge.data.cells import load_cell_classes, read_cell_classes
from hep2edge.data.combined import load_datasets
from hep2edge.data.manifest import find_manifest, labels_path_for, load_dataset
from hep2edge.data.validate import validate_dataset
from hep2edge.errors import DataError, ImageReadError
from hep2edge.imageio import read_image, read_labels, read_mask, write_image_tiff, write_labels_tiff
from hep2edge.synth import field
from hep2edge.synth.canvas import Layers
from hep2edge.synth.cells import Cell, cell_frame
from hep2edge.synth.writer import SynthConfig, synthesize_dataset

SIZE = (96, 128)


@pytest.fixture(scope="module")
def synth_labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labelled") / "data"
    synthesize_dataset(SynthConfig(out=out, patients=2, images_per_patient=2, size=SIZE, seed=3))
    return out


# ------------------------------------------------------------------------------------------------ synth


def test_synth_writes_uint16_ids_that_match_the_mask(synth_labelled: Path) -> None:
    records = load_dataset(synth_labelled).records
    assert len(records) == 4
    for record in records:
        assert record.labels == synth_labelled / f"{record.image.stem}_Labels.tif" == labels_path_for(record.image)
        raw = tifffile.imread(record.labels)
        assert raw.dtype == np.uint16 and raw.shape == SIZE
        ids = np.unique(raw)
        assert ids[0] == 0 and list(ids[1:]) == list(range(1, len(ids)))  # 1..n, no gaps
        assert np.array_equal(raw > 0, read_mask(record.mask))  # type: ignore[arg-type]
    report = validate_dataset(synth_labelled)
    assert report.ok, report.lines()
    assert report.summary()["labelled"] == 4 and report.summary()["cell_classes"] is None


def test_one_id_per_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cell centred in the image has its own id at its centre; any other id is a cell cut by the border."""
    laid_out: list[list[Cell]] = []
    real = field.layout_cells

    def spy(*args: object, **kwargs: object) -> list[Cell]:
        laid_out.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return laid_out[-1]

    monkeypatch.setattr(field, "layout_cells", spy)
    height, width = 200, 260
    style = field.PatientStyle(pattern=1, intensity=1, gain=1.0, variant=0.3, cell_diameter=50.0)
    image, mask, ids = field.compose_field_instances(np.random.default_rng(11), height, width, style)
    centred = [ids[int(c.cy), int(c.cx)] for c in laid_out[0] if 0 <= c.cy < height and 0 <= c.cx < width]
    assert 0 not in centred and len(set(centred)) == len(centred) > 5
    border = np.zeros_like(mask)
    border[[0, -1], :] = border[:, [0, -1]] = True
    for other in set(np.unique(ids)) - set(centred) - {0}:
        assert (border & (ids == other)).any()
    again_image, again_mask = field.compose_field(np.random.default_rng(11), height, width, style)
    assert np.array_equal(image, again_image) and np.array_equal(mask, again_mask)


def test_overlap_goes_to_the_cell_the_pixel_lies_deepest_in() -> None:
    """A later cell's cytoplasm over an earlier nucleus does not take it; ids > 0 is the mask."""
    def cell(cx: float) -> Cell:
        return Cell(cy=40, cx=cx, a=15, b=15, theta=0, harmonics=(0, 0, 0, 0), cyto_scale=1.6, cyto_dy=0,
                    cyto_dx=0, brightness=1, mitotic=False, phase=0)

    layers = Layers(80, 120)
    for cell_id, cx in ((1, 40.0), (2, 75.0)):
        frame = cell_frame(cell(cx), 80, 120)
        assert frame is not None
        layers.cell_id = cell_id
        layers.mark(frame, (frame.rho_cyto < 1.0) | (frame.rho < 1.0))
    ids = field.compact_ids(layers.ids)
    assert np.array_equal(ids > 0, layers.mask > 0) and set(np.unique(ids)) == {0, 1, 2}
    assert ids[40, 54] == 1 and ids[40, 61] == 2  # 14 px from centre 1 (its nucleus), 21 from it and 14 from 2
    assert field.compact_ids(np.array([[0, 7], [3, 7]])).tolist() == [[0, 2], [1, 2]]


# ------------------------------------------------------------------------------------------------ read_labels


def _labelled(root: Path) -> Path:
    """header_csv's 8 x 10 dataset with label images for 00001_p1 (ids 1, 2) and 00002_p1 (id 1)."""
    manifest = header_csv(root)
    ids = np.zeros((8, 10), np.uint16)
    ids[1:4, 1:4], ids[5:7, 5:9] = 1, 2
    write_labels_tiff(root / "00001_p1_Labels.tif", ids)
    write_labels_tiff(root / "00002_p1_Labels.tif", (ids > 0).astype(np.uint16))
    return manifest


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_read_labels_accepts_integer_ids(tmp_path: Path, dtype: type) -> None:
    ids: np.ndarray = np.arange(80, dtype=dtype).reshape(8, 10)
    tifffile.imwrite(tmp_path / "l.tif", ids)
    out = read_labels(tmp_path / "l.tif", (8, 10))
    assert out.dtype == np.int32 and np.array_equal(out, ids)


@pytest.mark.parametrize("case, message", [
    ("float", "label image is float32; instance ids must be integers"),
    ("rgb", "label image has 3 channels"),
    ("size", "label image is 12 x 8 but its image is 10 x 8 (W x H)"),
    ("negative", "ids outside 0..2**31-1"),
    ("truncated", "truncated TIFF"),
    ("missing", "l.tif"),
])
def test_read_labels_refuses_with_one_line_naming_the_file(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "l.tif"
    arrays: dict[str, np.ndarray] = {"float": np.ones((8, 10), np.float32), "rgb": np.ones((8, 10, 3), np.uint8),
              "size": np.ones((8, 12), np.uint16), "negative": np.full((8, 10), -1, np.int32),
              "truncated": np.ones((80, 100), np.uint16)}
    if case in arrays:
        tifffile.imwrite(path, arrays[case])
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(ImageReadError) as info:
        read_labels(path, (8, 10))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


def test_write_labels_tiff_round_trips_and_refuses_what_uint16_cannot_hold(tmp_path: Path) -> None:
    ids = np.array([[0, 65535], [3, 1]], np.int64)
    write_labels_tiff(tmp_path / "a.tif", ids)
    assert read_image(tmp_path / "a.tif").dtype == np.uint16
    assert read_labels(tmp_path / "a.tif").tolist() == ids.tolist()
    with pytest.raises(ValueError):
        write_labels_tiff(tmp_path / "b.tif", np.array([[70000]]))


# ------------------------------------------------------------------------------------------------ manifest


def test_records_carry_labels_by_name_or_column_and_none_without(tmp_path: Path) -> None:
    manifest = _labelled(tmp_path)
    write_labels_tiff(tmp_path / "other_ids.tif", np.zeros((8, 10), np.uint16))
    lines = manifest.read_text().splitlines()
    lines[0] += ",labels"
    lines[1:] = [line + "," for line in lines[1:]]
    lines[3] = lines[3] + "other_ids.tif"  # 00002_p1: the column wins over the file-name rule
    manifest.write_text("\n".join(lines) + "\n")
    records = {r.image.stem: r for r in load_dataset(tmp_path).records}
    assert records["00001_p1"].labels == tmp_path / "00001_p1_Labels.tif"
    assert records["00002_p1"].labels == tmp_path / "other_ids.tif"
    assert records["00001_p2"].labels is None
    combined = load_datasets([tmp_path])
    assert combined.records[0].labels == tmp_path / "00001_p1_Labels.tif"


def test_labels_column_is_contained_and_must_exist(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    manifest = header_csv(root)
    lines = manifest.read_text().splitlines()
    lines = [lines[0] + ",labels", lines[1] + ",../ids.tif", lines[2] + ",gone.tif"] + [f"{x}," for x in lines[3:]]
    manifest.write_text("\n".join(lines) + "\n")
    assert validate_dataset(root).lines() == [
        f"{manifest}:2: labels ../ids.tif lies outside the dataset folder {root}; `allow_outside` permits it",
        f"{manifest}:3: labels gone.tif not found"]


def test_cells_csv_is_never_taken_for_the_manifest(tmp_path: Path) -> None:
    header_csv(tmp_path, name="mine.csv")
    (tmp_path / "cells.csv").write_text("stem,cell,class\n")
    assert find_manifest(tmp_path) == tmp_path / "mine.csv"


# ------------------------------------------------------------------------------------------------ check


def test_check_reports_label_image_problems_one_line_each(tmp_path: Path) -> None:
    manifest = _labelled(tmp_path)
    tifffile.imwrite(tmp_path / "00001_p2_Labels.tif", np.ones((8, 10), np.float32))
    write_labels_tiff(tmp_path / "00002_p2_Labels.tif", np.ones((9, 10), np.uint16))
    (tmp_path / "00003_p1_Labels.tif").write_bytes(b"not a tiff")
    mask = np.full((8, 10), 255, np.uint8)
    mask[1:3, 1:4] = 0  # 6 labelled pixels of 00001_p1 now lie outside the mask
    write_image_tiff(tmp_path / "00001_p1_Mask.tif", mask)
    report = validate_dataset(tmp_path)
    assert report.lines() == [
        f"{manifest}:2: labels 00001_p1_Labels.tif: 6 labelled pixel(s) lie outside the mask 00001_p1_Mask.tif",
        f"{manifest}:3: labels {tmp_path / '00001_p2_Labels.tif'}: label image is float32; instance ids must be "
        "integers (uint8, uint16 or int32)",
        f"{manifest}:5: labels {tmp_path / '00002_p2_Labels.tif'}: label image is 10 x 9 but its image is 10 x 8 "
        "(W x H)",
        f"{manifest}:6: labels {tmp_path / '00003_p1_Labels.tif'}: not an image (unknown format)",
    ]
    assert report.summary()["labelled"] == 5


def _cells(root: Path, rows: list[str]) -> Path:
    path = root / "cells.csv"
    path.write_text("\n".join(["stem,cell,class", *rows]) + "\n")
    return path


BAD_CELLS = {
    3: "unknown stem '00009_p1': no image of that stem in the manifest",
    4: "unknown class 'purple' (expected one of homogeneous, speckled",
    5: "cell 3 is not in the label image 00001_p1_Labels.tif of 00001_p1",
    6: "cell 'x' is not a positive integer id",
    7: "image 00001_p2.tif has no label image (00001_p2_Labels.tif) for cell 1",
    8: "duplicate row: cell 1 of 00001_p1 already on line 2",
    9: "malformed row: 2 column(s), expected 3",
}


def test_check_reports_every_bad_cells_row_after_the_manifest(tmp_path: Path) -> None:
    _labelled(tmp_path)
    path = _cells(tmp_path, ["00001_p1,1,golgi", "00009_p1,1,golgi", "00001_p1,2,purple", "00001_p1,3,golgi",
                             "00001_p1,x,golgi", "00001_p2,1,golgi", "00001_p1,1,numem", "00002_p1,1"])
    report = validate_dataset(tmp_path)
    assert [p.file for p in report.problems] == [str(path)] * len(BAD_CELLS)
    for problem, (line, text) in zip(report.problems, BAD_CELLS.items()):
        assert problem.line == line and text in problem.message, problem
    assert report.cell_classes == 1
    no_decode = validate_dataset(tmp_path, check_images=False)  # ids unknown: every other row still checked
    assert [p.line for p in no_decode.problems] == [line for line in BAD_CELLS if line != 5]


def test_check_reports_a_cells_csv_without_its_columns(tmp_path: Path) -> None:
    _labelled(tmp_path)
    (tmp_path / "cells.csv").write_text("stem,id,pattern\n00001_p1,1,golgi\n")
    (problem,) = validate_dataset(tmp_path).problems
    assert str(problem) == f"{tmp_path / 'cells.csv'}:1: header lacks column(s): cell, class (expected stem,cell,class)"


def test_a_valid_cells_csv_is_summarised(tmp_path: Path) -> None:
    _labelled(tmp_path)
    _cells(tmp_path, ["00001_p1,1,golgi", "00001_p1,2,Speckled", " 00002_p1 , 1 , numem "])
    report = validate_dataset(tmp_path)
    assert report.ok, report.lines()
    assert report.summary()["cell_classes"] == 3 and report.summary()["labelled"] == 2


# ------------------------------------------------------------------------------------------------ read_cell_classes


def test_read_cell_classes_maps_stem_cell_to_pattern_index(tmp_path: Path) -> None:
    _labelled(tmp_path)
    records = load_dataset(tmp_path).records
    assert load_cell_classes(tmp_path, records) == {}
    path = _cells(tmp_path, ["00001_p1,1,golgi", "00001_p1,2,speckled", "00002_p1,1,numem"])
    assert read_cell_classes(path, records) == {"00001_p1": {1: 4, 2: 1}, "00002_p1": {1: 5}}
    assert load_cell_classes(tmp_path, records) == read_cell_classes(path, records)


@pytest.mark.parametrize("row, line, text", [
    ("00009_p1,1,golgi", 3, "unknown stem '00009_p1'"),
    ("00001_p1,2,purple", 3, "unknown class 'purple'"),
    ("00001_p1,7,golgi", 3, "cell 7 is not in the label image 00001_p1_Labels.tif"),
])
def test_read_cell_classes_raises_one_line_naming_file_and_line(tmp_path: Path, row: str, line: int,
                                                                text: str) -> None:
    _labelled(tmp_path)
    path = _cells(tmp_path, ["00001_p1,1,golgi", row])
    with pytest.raises(DataError) as info:
        read_cell_classes(path, load_dataset(tmp_path).records)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {text}") and "\n" not in message


def test_read_cell_classes_counts_further_problems_and_names_an_unreadable_label_image(tmp_path: Path) -> None:
    _labelled(tmp_path)
    path = _cells(tmp_path, ["00009_p1,1,golgi", "00001_p1,1,purple"])
    records = load_dataset(tmp_path).records
    with pytest.raises(DataError, match=r"cells\.csv:2: unknown stem .* \(and 1 more problem\(s\); `hep2edge check`"):
        read_cell_classes(path, records)
    (tmp_path / "00001_p1_Labels.tif").write_bytes(b"junk")
    _cells(tmp_path, ["00001_p1,1,golgi"])
    with pytest.raises(DataError, match="00001_p1_Labels.tif: not an image"):
        read_cell_classes(path, records)
