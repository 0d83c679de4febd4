"""Reading an I3A Task 2 style dataset: `{patient:05d}_p{k}.tif` images, `{stem}_Mask.tif` masks, a CSV manifest.

Two manifest forms are accepted: a header CSV (image, mask, pattern, intensity[, patient][, labels], any case
and spacing) and the headerless 4-column `Image, Mask, Label, Intensity` form of the public code. Optional
instance label images (uint16 cell ids) are the `labels` column or `{stem}_Labels.tif` beside the image.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hep2edge.errors import DataError
from hep2edge.labels import INTENSITIES, PATTERNS, LabelError, parse_intensity, parse_pattern

DEFAULT_MANIFEST = "labels.csv"
MASK_SUFFIX = "_Mask"
LABELS_SUFFIX = "_Labels"
CELLS_CSV = "cells.csv"  # optional per-cell classes (hep2edge.data.cells); never taken for the manifest
_PATIENT_RE = re.compile(r"^(\d+)_p\d+", re.IGNORECASE)
_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "file", "filename", "image_path", "path"),
    "mask": ("mask", "mask_path", "maskfile"),
    "pattern": ("pattern", "label", "class", "pattern_label"),
    "intensity": ("intensity", "intensity_label"),
    "patient": ("patient", "patient_id", "patientid", "specimen"),
    "labels": ("labels", "labels_path", "instances", "instance_labels"),
}
_HEADERLESS = ("image", "mask", "pattern", "intensity")
_REQUIRED = ("image", "pattern", "intensity")


@dataclass(frozen=True)
class ImageRecord:
    """One manifest row: an image, its mask (None when there is none), its patient and labels.

    `labels`: its instance label image (uint16 cell ids, 0 = background), None when it has none.
    """

    image: Path
    mask: Path | None
    patient: str
    pattern: int
    intensity: int
    line: int
    labels: Path | None = None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, located by file and (manifest) line."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset: its folder, manifest and records in manifest order."""

    root: Path
    manifest: Path
    records: tuple[ImageRecord, ...]

    def patients(self) -> list[str]:
        return sorted({r.patient for r in self.records})

    def by_patient(self) -> dict[str, list[ImageRecord]]:
        groups: dict[str, list[ImageRecord]] = {}
        for record in self.records:
            groups.setdefault(record.patient, []).append(record)
        return dict(sorted(groups.items()))

    def pattern_counts(self, per: str = "image") -> dict[str, int]:
        """Count per pattern name, of images (`per="image"`) or of patients (`per="patient"`)."""
        return _counts(self.records, "pattern", PATTERNS, per)

    def intensity_counts(self, per: str = "image") -> dict[str, int]:
        """Count per intensity name, of images or of patients."""
        return _counts(self.records, "intensity", INTENSITIES, per)

    def __len__(self) -> int:
        return len(self.records)


def located_problem(message: str, fallback: str) -> Problem:
    """A `file[:line]: problem` error message as a Problem (the whole message under `fallback` otherwise)."""
    located = re.match(r"^(.*?)(?::(\d+))?: (.*)$", message, re.DOTALL)
    if not located:
        return Problem(fallback, None, message)
    return Problem(located.group(1), int(located.group(2)) if located.group(2) else None, located.group(3))


def _counts(records: tuple[ImageRecord, ...], attr: str, names: tuple[str, ...], per: str) -> dict[str, int]:
    if per not in ("image", "patient"):
        raise ValueError(f"per must be 'image' or 'patient', got {per!r}")
    if per == "patient":
        first: dict[str, ImageRecord] = {}
        for record in records:
            first.setdefault(record.patient, record)
        records = tuple(first.values())
    counter = Counter(getattr(r, attr) for r in records)
    return {name: counter.get(i, 0) for i, name in enumerate(names)}


def patient_from_name(path: Path) -> str:
    """'00012_p3.tif' -> '00012'; any other name -> its stem."""
    match = _PATIENT_RE.match(path.name)
    return match.group(1) if match else path.stem


def mask_path_for(image: Path) -> Path:
    """The I3A mask name of an image: `{stem}_Mask{suffix}` beside it."""
    return image.with_name(f"{image.stem}{MASK_SUFFIX}{image.suffix}")


def labels_path_for(image: Path) -> Path:
    """The instance label image of an image: `{stem}_Labels.tif` beside it (whatever the image's format)."""
    return image.with_name(f"{image.stem}{LABELS_SUFFIX}.tif")


def find_manifest(root: Path, manifest: Path | str | None = None) -> Path:
    """The manifest CSV: `manifest` (relative to cwd or root), else root/labels.csv, else the single *.csv."""
    root = Path(root)
    if manifest is not None:
        given = Path(manifest)
        for candidate in (given, root / given):
            if candidate.is_file():
                return candidate
        raise DataError(f"{given}: manifest not found")
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found" if not root.exists() else f"{root}: not a folder")
    if (root / DEFAULT_MANIFEST).is_file():
        return root / DEFAULT_MANIFEST
    csvs = sorted(p for p in root.glob("*.csv") if p.is_file() and p.name != CELLS_CSV)
    if len(csvs) == 1:
        return csvs[0]
    if not csvs:
        empty = not any(root.iterdir())
        what = "folder is empty" if empty else f"no manifest CSV (expected {DEFAULT_MANIFEST} or a single *.csv)"
        raise DataError(f"{root}: {what}")
    names = ", ".join(p.name for p in csvs)
    raise DataError(f"{root}: several CSV files ({names}); pass the manifest explicitly")


class OutsideError(DataError):
    """A manifest path resolves (symlinks followed) outside the dataset folder and that is not allowed."""


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path` resolves inside `root`, symlinks followed; resolution only, no file is opened."""
    real_root = os.path.realpath(root)
    try:
        return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root
    except ValueError:  # another drive (Windows)
        return False


def _contain(root: Path, path: Path, shown: str, allow_outside: bool) -> None:
    """Raise OutsideError for a path outside root unless allowed; the message never says whether it exists."""
    if not allow_outside and not is_inside(root, path):
        raise OutsideError(f"{shown} lies outside the dataset folder {root}; `allow_outside` permits it")


def _as_written(cell: str) -> str:
    text = cell.strip()
    return text if text.isprintable() else repr(text)


def resolve_path(root: Path, cell: str, allow_outside: bool = False) -> Path:
    """A manifest path cell -> a path: absolute as is, else relative to root (falling back to the bare name).

    Unless `allow_outside`, a path resolving outside root raises OutsideError before anything outside is stat'ed.
    """
    path = Path(cell.strip().replace("\\", "/"))
    candidate = path if path.is_absolute() else root / path
    _contain(root, candidate, _as_written(cell), allow_outside)
    if path.is_absolute() or candidate.exists():
        return candidate
    fallback = root / path.name
    _contain(root, fallback, _as_written(cell), allow_outside)
    return fallback if fallback.exists() else candidate


def _header_columns(cells: list[str]) -> dict[str, int] | None:
    """Column index per field if `cells` is a header row, else None."""
    lowered = [c.strip().lower().replace(" ", "_") for c in cells]
    columns: dict[str, int] = {}
    for field, aliases in _COLUMN_ALIASES.items():
        for index, cell in enumerate(lowered):
            if cell in aliases and field not in columns:
                columns[field] = index
    return columns if "image" in columns or "intensity" in columns else None


def _read_rows(manifest: Path) -> list[tuple[int, list[str]]]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{manifest}: not a UTF-8 text CSV ({exc.reason})") from exc
    except OSError as exc:
        raise DataError(f"{manifest}: cannot read ({exc.strerror or exc})") from exc
    reader = csv.reader(text.splitlines())
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise DataError(f"{manifest}:{reader.line_num}: malformed CSV ({exc})") from exc
    return rows


def _companion(root: Path, cell: str, inferred: Path, what: str, allow_outside: bool) -> Path | None:
    """A mask or labels path: its cell when given, else the inferred file beside the image when it exists."""
    if cell:
        return _resolve(root, cell, what, allow_outside)
    _contain(root, inferred, f"{what} {_as_written(_rel(inferred, root))}", allow_outside)
    return inferred if inferred.exists() else None


def _paths(root: Path, cell: Callable[[str], str], allow_outside: bool) -> tuple[Path, Path | None, Path | None]:
    """The image, mask and labels paths of a row; mask and labels inferred beside the image when their cell is empty."""
    image = _resolve(root, cell("image"), "image", allow_outside)
    mask = _companion(root, cell("mask"), mask_path_for(image), "mask", allow_outside)
    return image, mask, _companion(root, cell("labels"), labels_path_for(image), "labels", allow_outside)


def _resolve(root: Path, cell: str, what: str, allow_outside: bool) -> Path:
    """resolve_path, with an OutsideError that says which column the path came from."""
    try:
        return resolve_path(root, cell, allow_outside)
    except OutsideError as exc:
        raise OutsideError(f"{what} {exc}") from None


def _record(root: Path, line: int, cells: list[str], columns: dict[str, int], where: str,
            allow_outside: bool = False) -> ImageRecord | Problem:
    """Parse one row into a record, or the problem that stops it."""
    needed = max(columns.values()) + 1
    if len(cells) < needed:
        return Problem(where, line, f"malformed row: {len(cells)} column(s), expected {needed}")

    def cell(field: str) -> str:
        return cells[columns[field]].strip() if field in columns else ""

    if not cell("image"):
        return Problem(where, line, "malformed row: empty image cell")
    try:
        image, mask, labels = _paths(root, cell, allow_outside)
    except OutsideError as exc:
        return Problem(where, line, str(exc))
    try:
        pattern = parse_pattern(cell("pattern"))
        intensity = parse_intensity(cell("intensity"))
    except LabelError as exc:
        return Problem(where, line, str(exc))
    patient = cell("patient") or patient_from_name(image)
    return ImageRecord(image=image, mask=mask, patient=patient, pattern=pattern, intensity=intensity, line=line,
                       labels=labels)


def parse_manifest(
    root: Path, manifest: Path, allow_outside: bool = False
) -> tuple[list[ImageRecord], list[Problem]]:
    """Every row as a record, and the problems of the rows that could not be parsed or lie outside root."""
    where = str(manifest)
    rows = _read_rows(manifest)
    if not rows:
        return [], [Problem(where, None, "manifest has no rows")]
    columns = _header_columns(rows[0][1])
    problems: list[Problem] = []
    if columns is None:
        columns = {field: i for i, field in enumerate(_HEADERLESS)}
    else:
        missing = [f for f in _REQUIRED if f not in columns]
        if missing:
            return [], [Problem(where, rows[0][0], f"header lacks column(s): {', '.join(missing)}")]
        rows = rows[1:]
    records: list[ImageRecord] = []
    for line, cells in rows:
        parsed = _record(root, line, cells, columns, where, allow_outside)
        (problems if isinstance(parsed, Problem) else records).append(parsed)  # type: ignore[arg-type]
    return records, problems


def structural_problems(records: list[ImageRecord], where: str, root: Path) -> list[Problem]:
    """Problems visible without decoding: missing files, duplicate rows, patients whose labels disagree."""
    problems: list[Problem] = []
    seen: dict[Path, int] = {}
    first_of_patient: dict[str, ImageRecord] = {}
    for r in records:
        if r.image in seen:
            message = f"duplicate row: {_rel(r.image, root)} already on line {seen[r.image]}"
            problems.append(Problem(where, r.line, message))
            continue
        seen[r.image] = r.line
        if not r.image.is_file():
            problems.append(Problem(where, r.line, f"image {_rel(r.image, root)} not found"))
        if r.mask is not None and not r.mask.is_file():
            problems.append(Problem(where, r.line, f"mask {_rel(r.mask, root)} not found"))
        if r.labels is not None and not r.labels.is_file():
            problems.append(Problem(where, r.line, f"labels {_rel(r.labels, root)} not found"))
        first = first_of_patient.setdefault(r.patient, r)
        for attr, names in (("pattern", PATTERNS), ("intensity", INTENSITIES)):
            mine, theirs = getattr(r, attr), getattr(first, attr)
            if mine != theirs:
                problems.append(Problem(where, r.line, f"patient {r.patient}: {attr} {names[mine]} here but "
                                        f"{names[theirs]} on line {first.line}"))
    return problems


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def parse_folder(
    root: Path, manifest: Path | str | None = None, allow_outside: bool = False
) -> tuple[Path, list[ImageRecord], list[Problem]]:
    """A folder's manifest, its records and every problem visible without decoding (sorted by line)."""
    manifest_path = find_manifest(root, manifest)
    records, problems = parse_manifest(root, manifest_path, allow_outside)
    problems += structural_problems(records, str(manifest_path), root)
    if not problems and not records:
        problems.append(Problem(str(manifest_path), None, "manifest has no rows"))
    problems.sort(key=lambda p: p.line or 0)
    return manifest_path, records, problems


def problems_message(head: str, lines: list[str]) -> str:
    """`head:` then up to 20 problems, one per indented line."""
    shown = "\n  ".join(lines[:20])
    more = f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else ""
    return f"{head}:\n  {shown}{more}"


def check_command(roots: list[Path], allow_outside: bool) -> str:
    """The `hep2edge check` line(s) that show every problem of these folders."""
    flag = " --allow-outside" if allow_outside else ""
    return ", ".join(f"`hep2edge check {root}{flag}`" for root in roots)


def load_dataset(root: Path | str, manifest: Path | str | None = None, allow_outside: bool = False) -> Dataset:
    """Parse a dataset folder; raise DataError listing every problem found (images are not decoded).

    Manifest paths must resolve inside `root` (symlinks followed) unless `allow_outside`.
    """
    root = Path(root)
    manifest_path, records, problems = parse_folder(root, manifest, allow_outside)
    if problems:
        check = check_command([root], allow_outside).strip("`")
        head = f"{manifest_path}: {len(problems)} problem(s) (run `{check}`)"
        raise DataError(problems_message(head, [str(p) for p in problems]))
    return Dataset(root=root, manifest=manifest_path, records=tuple(records))
