"""The label schema and its tolerant parsing."""

from __future__ import annotations

import pytest

from hep2edge.labels import INTENSITIES, PATTERNS, LabelError, parse_intensity, parse_pattern


def test_order_is_the_public_one() -> None:
    assert PATTERNS == ("homogeneous", "speckled", "nucleolar", "centromere", "golgi", "numem", "mitsp")
    assert INTENSITIES == ("intermediate", "positive")


@pytest.mark.parametrize("cell, index", [
    ("homogeneous", 0), ("Homogeneous ", 0), ("  SPECKLED", 1), ("nucleolar\t", 2), ("Centromere", 3),
    ("golgi", 4), ("NuMem", 5), ("nuclear membrane", 5), ("mitsp", 6), ("Mitotic Spindle", 6),
    ("homogenous", 0), ("3", 3), (" 6 ", 6), (4, 4), ("2.0", 2),
])
def test_parse_pattern(cell: object, index: int) -> None:
    assert parse_pattern(cell) == index


@pytest.mark.parametrize("cell, index", [("intermediate", 0), ("Positive ", 1), ("POSITIVE", 1), ("0", 0), (1, 1)])
def test_parse_intensity(cell: object, index: int) -> None:
    assert parse_intensity(cell) == index


@pytest.mark.parametrize("cell", ["negative", "", "7", "-1", "1.5", "speckles", "nan", None])
def test_unknown_pattern_names_the_cell_and_the_valid_names(cell: object) -> None:
    with pytest.raises(LabelError, match="unknown pattern label") as info:
        parse_pattern(cell)
    assert "homogeneous" in str(info.value) and "0-6" in str(info.value)


@pytest.mark.parametrize("cell", ["negative", "2", "weak"])
def test_unknown_intensity(cell: str) -> None:
    with pytest.raises(LabelError, match="unknown intensity label"):
        parse_intensity(cell)


def test_label_error_is_a_value_error() -> None:
    assert issubclass(LabelError, ValueError)
