"""Validate a dataset: collect every problem (up to a limit), each with its file and line, and summarise it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.data.cells import check_labels, find_cells_csv, parse_cell_classes
from hep2edge.data.manifest import (
    Dataset,
    ImageRecord,
    Problem,
    _rel,
    find_manifest,
    located_problem,
    mask_path_for,
    parse_manifest,
    structural_problems,
)
from hep2edge.errors import DataError, ImageReadError
from hep2edge.imageio import read_image, read_mask

__all__ = ["Problem", "ValidationReport", "validate_dataset"]


@dataclass
class ValidationReport:
    """The outcome of `validate_dataset`: the problems found and the records that parsed."""

    root: Path
    manifest: Path | None
    records: tuple[ImageRecord, ...] = ()
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False
    max_problems: int = 50
    cell_classes: int | None = None  # cells given a class by a valid cells.csv row; None without cells.csv

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> bool:
        """Record a problem; False once the limit is reached (the caller may stop looking)."""
        if len(self.problems) >= self.max_problems:
            self.truncated = True
            return False
        self.problems.append(problem)
        return True

    @property
    def full(self) -> bool:
        return len(self.problems) >= self.max_problems

    def dataset(self) -> Dataset:
        if self.manifest is None or not self.ok:
            raise DataError(f"{self.root}: dataset has {len(self.problems)} problem(s)")
        return Dataset(self.root, self.manifest, self.records)

    def summary(self) -> dict[str, Any]:
        """Patients, images, `labelled` images, `cell_classes`, and per pattern / intensity the patients and images."""
        data = Dataset(self.root, self.manifest or self.root, self.records)
        patterns_p, patterns_i = data.pattern_counts("patient"), data.pattern_counts("image")
        inten_p, inten_i = data.intensity_counts("patient"), data.intensity_counts("image")
        return {
            "root": str(self.root),
            "manifest": str(self.manifest) if self.manifest else None,
            "patients": len(data.patients()),
            "images": len(self.records),
            "labelled": sum(r.labels is not None for r in self.records),  # images with an instance label image
            "cell_classes": self.cell_classes,
            "patterns": {k: {"patients": patterns_p[k], "images": patterns_i[k]} for k in patterns_p},
            "intensities": {k: {"patients": inten_p[k], "images": inten_i[k]} for k in inten_p},
            "problems": len(self.problems),
            "truncated": self.truncated,
        }

    def lines(self) -> list[str]:
        """Every problem as `file:line: message`."""
        out = [str(p) for p in self.problems]
        if self.truncated:
            out.append(f"... stopped after {self.max_problems} problems (raise `max_problems` to see more)")
        return out


def missing_mask_problems(records: list[ImageRecord], where: str) -> list[Problem]:
    """Rows with no mask at all (empty mask cell and no `{stem}_Mask` file): training needs one per image."""
    problems, seen = [], set()
    for r in records:
        if r.mask is None and r.image not in seen:
            problems.append(Problem(where, r.line, f"image {r.image.name} has no mask (empty mask cell and no "
                                    f"{mask_path_for(r.image).name}); training needs a mask per image"))
        seen.add(r.image)
    return problems


def _bit_depth(image: np.ndarray) -> str:
    return f"{image.dtype.itemsize * 8}-bit"


def _checked_mask(report: ValidationReport, r: ImageRecord, where: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The record's mask when it is readable and of its image's size; its problems reported."""
    if r.mask is None or not r.mask.is_file():
        return None
    try:
        mask = read_mask(r.mask)
    except ImageReadError as exc:
        report.add(Problem(where, r.line, f"mask {exc}"))
        return None
    if mask.shape != shape:
        report.add(Problem(where, r.line, f"mask {_rel(r.mask, report.root)} is {mask.shape[1]} x {mask.shape[0]} "
                           f"but its image is {shape[1]} x {shape[0]} (W x H)"))
        return None
    return mask


def _check_images(report: ValidationReport, records: list[ImageRecord], where: str,
                  skip: set[int]) -> dict[Path, set[int]]:
    """Decode every image, mask and label image; report unreadable files, mixed bit depths, sizes that differ
    and labelled pixels outside the mask. Returns the cell ids of each label image read."""
    first: tuple[str, int] | None = None  # bit depth and line of the first readable image
    label_ids: dict[Path, set[int]] = {}
    for r in records:
        if report.full:
            report.truncated = True
            break
        if r.line in skip or not r.image.is_file():
            continue
        try:
            image = read_image(r.image)
        except ImageReadError as exc:
            report.add(Problem(where, r.line, f"image {exc}"))
            continue
        shape, depth = image.shape, _bit_depth(image)
        first = first or (depth, r.line)
        if depth != first[0]:
            report.add(Problem(where, r.line, f"image {_rel(r.image, report.root)} is {depth} but the image on line "
                               f"{first[1]} is {first[0]}; convert the dataset to one bit depth"))
        mask = _checked_mask(report, r, where, shape)
        if r.labels is not None and r.labels.is_file():
            found, problems = check_labels(r, (shape[0], shape[1]), mask, where, report.root)
            for problem in problems:
                report.add(problem)
            if found is not None:
                label_ids[r.labels] = found
    return label_ids


def _check_cells(report: ValidationReport, label_ids: dict[Path, set[int]], allow_outside: bool) -> None:
    """Report the problems of the folder's cells.csv, if it has one (cell ids checked where labels were read)."""
    try:
        path = find_cells_csv(report.root, allow_outside)
    except DataError as exc:
        report.add(located_problem(str(exc), str(report.root)))
        return
    if path is None:
        return
    classes, problems = parse_cell_classes(path, report.records,
                                           lambda r: label_ids.get(r.labels) if r.labels is not None else None)
    report.cell_classes = sum(len(cells) for cells in classes.values())
    for problem in problems:
        if not report.add(problem):
            break


def validate_dataset(
    root: Path | str, manifest: Path | str | None = None, max_problems: int = 50, check_images: bool = True,
    allow_outside: bool = False,
) -> ValidationReport:
    """Check a dataset folder and return every problem found (up to `max_problems`) with a summary.

    A manifest path resolving outside `root` (symlinks followed) is a problem unless `allow_outside`.
    """
    root = Path(root)
    report = ValidationReport(root=root, manifest=None, max_problems=max(1, max_problems))
    try:
        report.manifest = find_manifest(root, manifest)
        records, row_problems = parse_manifest(root, report.manifest, allow_outside)
    except DataError as exc:
        report.add(located_problem(str(exc), str(root)))
        return report
    where = str(report.manifest)
    unique: dict[Path, ImageRecord] = {}
    for record in records:
        unique.setdefault(record.image, record)
    report.records = tuple(unique.values())
    structural = structural_problems(records, where, root) + missing_mask_problems(records, where)
    for problem in sorted(row_problems + structural, key=lambda p: p.line or 0):
        report.add(problem)
    label_ids: dict[Path, set[int]] = {}
    if check_images and not report.full:
        duplicates = {p.line for p in structural if p.message.startswith("duplicate") and p.line}
        label_ids = _check_images(report, records, where, duplicates)
    if not records and not report.problems:
        report.add(Problem(where, None, "manifest has no image rows"))
    report.problems.sort(key=lambda p: p.line or 0)
    _check_cells(report, label_ids, allow_outside)  # after the manifest's lines, in cells.csv line order
    return report
