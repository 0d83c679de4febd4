"""The retraining loop: reviewed specimens as an I3A-format dataset that `hep2edge check` and `train` take.

Each field of a confirmed or corrected specimen is copied from its source path (checked against the content
hash it was analysed under), the model's mask becomes `{stem}_Mask.tif` (0/255) and `labels.csv` carries
the reviewed labels: `pattern` is the primary pattern (training is single-label), `patterns` all of them,
`mask_source` = predicted (these masks are the model's, not drawn by hand), and who reviewed what.
The dataset is built in a hidden folder beside OUT and renamed into place: a failure leaves no OUT.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from hep2edge.atomic import OutputWriteError, atomic_write_text, describe_os_error
from hep2edge.errors import ConfigError, DataError
from hep2edge.imageio import write_image_tiff
from hep2edge.review.db import ResultsDB
from hep2edge.review.files import image_files, png_problem
from hep2edge.review.worklist import Entry, ImageRow, entries, images

MANIFEST = "labels.csv"
MANIFEST_COLUMNS = ("image", "mask", "patient", "pattern", "intensity", "patterns", "mask_source", "reviewer",
                    "review", "model_id", "source")


@dataclass(frozen=True)
class Planned:
    """One field to copy: its result row, the reviewed specimen it belongs to, and its mask PNG."""

    image: ImageRow
    entry: Entry
    mask: Path


@dataclass
class DatasetSummary:
    out: Path
    specimens: int = 0
    images: int = 0
    skipped: list[str] = field(default_factory=list)


def to_dataset(store: ResultsDB, out: Path, skip_missing: bool = False) -> DatasetSummary:
    """Write the reviewed specimens of `store` as a dataset in `out` (which must not exist or be empty)."""
    _check_out(out)
    plan, problems = _plan(store)
    if problems and not skip_missing:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; `skip_missing` leaves such images out")
    if not plan:
        raise ConfigError(f"{store.results}: no reviewed specimen with usable images: confirm or correct some first"
                          " (hep2edge review, or hep2edge results confirm)")
    try:
        _write(plan, out)
    except OSError as exc:
        raise OutputWriteError(f"{out}: cannot write the dataset ({describe_os_error(exc)})") from exc
    return DatasetSummary(out, len({item.entry.key for item in plan}), len(plan), problems)


def _write(plan: list[Planned], out: Path) -> None:
    """Copy the plan into a hidden folder beside `out`, then rename it into place (removed on any failure)."""
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows = [_copy(item, stage) for item in plan]
        atomic_write_text(stage / MANIFEST, _manifest(rows))
        if out.exists():
            out.rmdir()
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty folder; pass a new OUT")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder")


def _plan(store: ResultsDB) -> tuple[list[Planned], list[str]]:
    """Every field of every reviewed specimen, and the problems of those that cannot be used."""
    plan: list[Planned] = []
    problems: list[str] = []
    with store.connect() as db:
        reviewed = [(e, images(db, e.key)) for e in entries(db) if e.review is not None]
    for entry, rows in sorted(reviewed, key=lambda pair: pair[0].key):
        for image in rows:
            mask = image_files(store.results, image.stem)["mask"]
            problem = _source_problem(image) or _mask_problem(mask)
            if problem:
                problems.append(f"specimen {entry.key}, image {image.stem}: {problem}")
            else:
                plan.append(Planned(image, entry, mask))
    return plan, problems


def _source_problem(image: ImageRow) -> str | None:
    source = Path(image.source_path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        return f"source {source} cannot be read ({describe_os_error(exc)})"
    if image.content_hash and hashlib.sha256(data).hexdigest() != image.content_hash:
        return f"source {source} changed since it was analysed"
    return None


def _mask_problem(mask: Path) -> str | None:
    problem = png_problem(mask)
    return f"mask {mask.name}: {problem}" if problem else None


def _copy(item: Planned, stage: Path) -> list[str]:
    """Copy one field and write its mask into `stage`; its manifest row."""
    image, entry, review = item.image, item.entry, item.entry.review
    assert review is not None
    source = Path(image.source_path)
    name = f"{image.stem}{source.suffix.lower()}"
    shutil.copyfile(source, stage / name)
    mask = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DataError(f"{item.mask}: cannot be decoded")
    write_image_tiff(stage / f"{image.stem}_Mask.tif", ((mask > 0) * 255).astype("uint8"))
    verdict = review.after
    return [name, f"{image.stem}_Mask.tif", entry.key, verdict.pattern, verdict.intensity, ";".join(verdict.patterns),
            "predicted", review.reviewer, str(review.id), image.model_id, str(source)]


def _manifest(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
