"""Instance label images and optional per-cell pattern classes of a dataset.

A label image (`{stem}_Labels.tif` or the manifest's `labels` column) holds one integer id per cell, 0 for
background. `cells.csv` in the dataset folder (columns stem, cell, class) gives some or all cells a pattern
class (a `hep2edge.labels.PATTERNS` name); a cell id must be present in that image's label image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hep2edge.data.manifest import (
    CELLS_CSV,
    ImageRecord,
    OutsideError,
    Problem,
    _read_rows,
    _rel,
    is_inside,
    labels_path_for,
    located_problem,
)
from hep2edge.errors import DataError, ImageReadError
from hep2edge.imageio import read_labels
from hep2edge.labels import PATTERNS, LabelError, parse_pattern

__all__ = ["CELLS_CSV", "check_labels", "find_cells_csv", "load_cell_classes", "parse_cell_classes",
           "read_cell_classes"]

CellClasses = dict[str, dict[int, int]]  # image stem -> cell id -> pattern index
LabelIds = Callable[[ImageRecord], set[int] | None]  # a record's cell ids; None when they cannot be told
_COLUMNS = ("stem", "cell", "class")


def find_cells_csv(root: Path, allow_outside: bool = False) -> Path | None:
    """`root/cells.csv` when present, else None; OutsideError when it resolves outside root (unless allowed)."""
    path = Path(root) / CELLS_CSV
    if not allow_outside and not is_inside(Path(root), path):  # a symlink: resolved, never stat'ed
        raise OutsideError(f"{path}: lies outside the dataset folder {root}; `allow_outside` permits it")
    return path if path.is_file() else None


def check_labels(record: ImageRecord, shape: tuple[int, int], mask: np.ndarray | None, where: str,
                 root: Path) -> tuple[set[int] | None, list[Problem]]:
    """Decode a record's label image: its cell ids (None when unreadable) and its problems as manifest lines.

    Problems: unreadable, not one integer channel, size other than `shape`, labelled pixels outside `mask`.
    """
    assert record.labels is not None
    try:
        ids = read_labels(record.labels, shape)
    except ImageReadError as exc:
        return None, [Problem(where, record.line, f"labels {exc}")]
    problems = []
    if mask is not None and mask.shape == ids.shape:
        outside = int(np.count_nonzero((ids > 0) & ~mask))
        if outside:
            problems.append(Problem(where, record.line, f"labels {_rel(record.labels, root)}: {outside} labelled "
                                    f"pixel(s) lie outside the mask {_rel(record.mask or record.image, root)}"))
    found = np.unique(ids)
    return {int(i) for i in found[found > 0]}, problems


def _parse_row(cells: list[str], columns: dict[str, int], by_stem: dict[str, ImageRecord],
                 ids: LabelIds) -> str | tuple[str, int, int]:
    """One cells.csv row as (stem, cell id, pattern index), or the one-line problem that stops it."""
    if len(cells) <= max(columns.values()):
        return f"malformed row: {len(cells)} column(s), expected {max(columns.values()) + 1}"
    stem, cell, name = (cells[columns[c]].strip() for c in _COLUMNS)
    record = by_stem.get(stem)
    if record is None:
        return f"unknown stem {stem!r}: no image of that stem in the manifest"
    if not cell.isdigit() or int(cell) < 1:
        return f"cell {cell!r} is not a positive integer id"
    try:
        pattern = parse_pattern(name)
    except LabelError:
        return f"unknown class {name!r} (expected one of {', '.join(PATTERNS)})"
    if record.labels is None:
        return f"image {record.image.name} has no label image ({labels_path_for(record.image).name}) for cell {cell}"
    found = ids(record)
    if found is not None and int(cell) not in found:
        return f"cell {int(cell)} is not in the label image {record.labels.name} of {stem}"
    return stem, int(cell), pattern


def _header(path: Path, rows: list[tuple[int, list[str]]]) -> dict[str, int] | Problem:
    """Column index of stem, cell and class from the header row, or the problem with it."""
    if not rows:
        return Problem(str(path), None, "no rows (expected a header: stem,cell,class)")
    line, cells = rows[0]
    lowered = [c.strip().lower() for c in cells]
    missing = [c for c in _COLUMNS if c not in lowered]
    if missing:
        return Problem(str(path), line, f"header lacks column(s): {', '.join(missing)} (expected stem,cell,class)")
    return {c: lowered.index(c) for c in _COLUMNS}


def parse_cell_classes(path: Path, records: Sequence[ImageRecord],
                       ids: LabelIds) -> tuple[CellClasses, list[Problem]]:
    """Every valid row of a cells.csv and the problems of the others, each as `cells.csv:line: problem`.

    `ids(record)` gives the cell ids of a record's label image, None when they cannot be told (not checked then).
    """
    try:
        rows = _read_rows(path)
    except DataError as exc:
        return {}, [located_problem(str(exc), str(path))]
    columns = _header(path, rows)
    if isinstance(columns, Problem):
        return {}, [columns]
    by_stem: dict[str, ImageRecord] = {}
    for record in records:
        by_stem.setdefault(record.image.stem, record)
    classes: CellClasses = {}
    seen: dict[tuple[str, int], int] = {}
    problems: list[Problem] = []
    for line, cells in rows[1:]:
        parsed = _parse_row(cells, columns, by_stem, ids)
        if isinstance(parsed, str):
            problems.append(Problem(str(path), line, parsed))
            continue
        stem, cell, pattern = parsed
        if (stem, cell) in seen:
            problems.append(Problem(str(path), line, f"duplicate row: cell {cell} of {stem} already on line "
                                    f"{seen[stem, cell]}"))
            continue
        seen[stem, cell] = line
        classes.setdefault(stem, {})[cell] = pattern
    return classes, problems


def _reading_ids() -> LabelIds:
    """A LabelIds that decodes each record's label image once (DataError naming the file when it cannot)."""
    cache: dict[Path, set[int]] = {}

    def ids(record: ImageRecord) -> set[int] | None:
        if record.labels is None:
            return None
        if record.labels not in cache:
            found = np.unique(read_labels(record.labels))
            cache[record.labels] = {int(i) for i in found[found > 0]}
        return cache[record.labels]

    return ids


def read_cell_classes(path: Path | str, records: Sequence[ImageRecord]) -> CellClasses:
    """stem -> cell id -> pattern index from a cells.csv; DataError (one line: file, line, problem) on any problem.

    Records are matched by image stem; a cell id must be present in that record's label image.
    """
    classes, problems = parse_cell_classes(Path(path), records, _reading_ids())
    if problems:
        more = f" (and {len(problems) - 1} more problem(s); `hep2edge check` lists them)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}")
    return classes


def load_cell_classes(root: Path | str, records: Sequence[ImageRecord], allow_outside: bool = False) -> CellClasses:
    """The per-cell classes of a dataset folder: read_cell_classes of root/cells.csv, {} when it has none."""
    path = find_cells_csv(Path(root), allow_outside)
    return read_cell_classes(path, records) if path is not None else {}
