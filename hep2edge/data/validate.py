"""Validate a dataset: collect every problem (up to a limit), each with its file and line, and summarise it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hep2edge.data.manifest import (
    Dataset,
    ImageRecord,
    Problem,
    _rel,
    find_manifest,
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
        """Patients, images, and per pattern / intensity name the number of patients and images."""
        data = Dataset(self.root, self.manifest or self.root, self.records)
        patterns_p, patterns_i = data.pattern_counts("patient"), data.pattern_counts("image")
        inten_p, inten_i = data.intensity_counts("patient"), data.intensity_counts("image")
        return {
            "root": str(self.root),
            "manifest": str(self.manifest) if self.manifest else None,
            "patients": len(data.patients()),
            "images": len(self.records),
            "patterns": {k: {"patients": patterns_p[k], "images": patterns_i[k]} for k in patterns_p},
            "intensities": {k: {"patients": inten_p[k], "images": inten_i[k]} for k in inten_p},
            "problems": len(self.problems),
            "truncated": self.truncated,
        }

    def lines(self) -> list[str]:
        """Every problem as `file:line: message`."""
        out = [str(p) for p in self.problems]
        if self.truncated:
            out.append(f"... stopped after {self.max_problems} problems (raise --max-problems to see more)")
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


def _check_images(report: ValidationReport, records: list[ImageRecord], where: str, skip: set[int]) -> None:
    """Decode every image and mask; report unreadable files, mixed bit depths and masks of another size."""
    first: tuple[str, int] | None = None  # bit depth and line of the first readable image
    for r in records:
        if report.full:
            report.truncated = True
            return
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
        if r.mask is None or not r.mask.is_file():
            continue
        try:
            mask_shape = read_mask(r.mask).shape
        except ImageReadError as exc:
            report.add(Problem(where, r.line, f"mask {exc}"))
            continue
        if mask_shape != shape:
            report.add(Problem(where, r.line, f"mask {_rel(r.mask, report.root)} is {mask_shape[1]} x {mask_shape[0]} "
                               f"but its image is {shape[1]} x {shape[0]} (W x H)"))


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
        located = re.match(r"^(.*?)(?::(\d+))?: (.*)$", str(exc), re.DOTALL)
        if located:
            line = int(located.group(2)) if located.group(2) else None
            report.add(Problem(located.group(1), line, located.group(3)))
        else:
            report.add(Problem(str(root), None, str(exc)))
        return report
    where = str(report.manifest)
    unique: dict[Path, ImageRecord] = {}
    for record in records:
        unique.setdefault(record.image, record)
    report.records = tuple(unique.values())
    structural = structural_problems(records, where, root) + missing_mask_problems(records, where)
    for problem in sorted(row_problems + structural, key=lambda p: p.line or 0):
        report.add(problem)
    if check_images and not report.full:
        duplicates = {p.line for p in structural if p.message.startswith("duplicate") and p.line}
        _check_images(report, records, where, duplicates)
    if not records and not report.problems:
        report.add(Problem(where, None, "manifest has no image rows"))
    report.problems.sort(key=lambda p: p.line or 0)
    return report
