"""Markdown tables and number formatting for the result files (missing values print as '-')."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    """A number with `digits` decimals (thousands separated), or '-' for None/NaN; other values as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,.{digits}f}{unit}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A GitHub Markdown table; columns whose index is in `right` are right-aligned (numbers)."""
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = [str(cell).replace("|", "\\|").replace("\n", " ") for cell in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    """'met' / 'not met' / 'not measured' for a figure against its target."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "not met"
