"""The label schema: 7 ANA staining patterns and 2 intensity classes, with tolerant parsing."""

from __future__ import annotations

PATTERNS: tuple[str, ...] = (
    "homogeneous",
    "speckled",
    "nucleolar",
    "centromere",
    "golgi",
    "numem",
    "mitsp",
)
INTENSITIES: tuple[str, ...] = ("intermediate", "positive")

_PATTERN_ALIASES = {
    "nuclear membrane": "numem",
    "nuclearmembrane": "numem",
    "mitotic spindle": "mitsp",
    "mitoticspindle": "mitsp",
    "homogenous": "homogeneous",
}


class LabelError(ValueError):
    """A label cell that is neither a known name nor a valid index."""


def _parse(value: object, names: tuple[str, ...], aliases: dict[str, str], what: str) -> int:
    text = str(value).strip().lower()
    text = aliases.get(text, text)
    if text in names:
        return names.index(text)
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number.is_integer() and 0 <= int(number) < len(names):
        return int(number)
    raise LabelError(f"unknown {what} label {str(value)!r} (expected one of {', '.join(names)} or 0-{len(names) - 1})")


def parse_pattern(value: object) -> int:
    """'Homogeneous ', 'NUMEM', '3', 3 -> class index; raises LabelError otherwise."""
    return _parse(value, PATTERNS, _PATTERN_ALIASES, "pattern")


def parse_intensity(value: object) -> int:
    """'intermediate', 'Positive ', '1' -> 0/1; raises LabelError otherwise."""
    return _parse(value, INTENSITIES, {}, "intensity")
