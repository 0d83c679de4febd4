"""Several dataset folders read as one training set (`hep2edge train --data A --data B`).

Each folder is parsed with its own manifest and its own containment rule; the problems of every folder are
reported together. A patient id found in more than one folder may be different people, so such an id is
namespaced in every folder that has it: `<folder name>:<id>` (the folder's 1-based position in the list
instead of its name when two folders share a name). Ids are compared as `patient_key` ('00012' = '12').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hep2edge.data.manifest import (
    Dataset,
    ImageRecord,
    check_command,
    load_dataset,
    parse_folder,
    problems_message,
)
from hep2edge.errors import ConfigError, DataError


def patient_key(value: object) -> str:
    """'00012', 12, ' 12 ' -> '12': patient ids compared without padding."""
    text = str(value).strip()
    return (text.lstrip("0") or "0") if text.isdigit() else text


@dataclass(frozen=True)
class Datasets:
    """One or more parsed dataset folders, in the order given; patients already namespaced where they collide."""

    parts: tuple[Dataset, ...]

    @property
    def records(self) -> tuple[ImageRecord, ...]:
        return tuple(record for part in self.parts for record in part.records)

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(part.root for part in self.parts)

    def location(self) -> dict[str, Any]:
        """Where the data lies, for checkpoints: `root`/`manifest` for one folder, `roots`/`manifests` for several."""
        if len(self.parts) == 1:
            return {"root": str(self.parts[0].root.resolve()), "manifest": str(self.parts[0].manifest.resolve())}
        return {"roots": [str(p.root.resolve()) for p in self.parts],
                "manifests": [str(p.manifest.resolve()) for p in self.parts]}

    def describe(self) -> str | list[str]:
        """The folder (one) or folders (several) as written in folds.json."""
        roots = [str(root.resolve()) for root in self.roots]
        return roots[0] if len(roots) == 1 else roots


def folder_labels(roots: Sequence[Path]) -> list[str]:
    """Each folder's namespace: its name, or its 1-based position when two folders share a name."""
    names = [Path(root).resolve().name or str(index + 1) for index, root in enumerate(roots)]
    unique = len(set(names)) == len(names)
    return names if unique else [str(index + 1) for index in range(len(roots))]


def colliding_patients(parts: Sequence[Sequence[ImageRecord]]) -> set[str]:
    """patient_key of the ids that occur in more than one folder."""
    seen: dict[str, int] = {}
    for records in parts:
        for key in {patient_key(r.patient) for r in records}:
            seen[key] = seen.get(key, 0) + 1
    return {key for key, count in seen.items() if count > 1}


def namespaced(records: Sequence[ImageRecord], label: str, colliding: set[str]) -> tuple[ImageRecord, ...]:
    """The records with each colliding patient id written `label:id`."""
    return tuple(dataclasses.replace(r, patient=f"{label}:{r.patient}") if patient_key(r.patient) in colliding
                 else r for r in records)


def check_roots(roots: Sequence[Path], manifest: Path | str | None) -> None:
    """ConfigError for no folder, a folder given twice, or `manifest` with several folders."""
    if not roots:
        raise ConfigError("no dataset folder given")
    real = [Path(root).resolve() for root in roots]
    twice = next((roots[i] for i in range(len(real)) if real[i] in real[:i]), None)
    if twice is not None:
        raise ConfigError(f"`data` {twice}: given twice")
    if manifest is not None and len(roots) > 1:
        raise ConfigError("`manifest` names one folder's manifest: with several `data` folders each uses its own "
                          "labels.csv (or its single *.csv)")


def _parse_all(roots: Sequence[Path], allow_outside: bool) -> tuple[list[Dataset], list[str], list[Path]]:
    """Every folder parsed: its dataset, and the problem lines and folders of those that failed."""
    parts: list[Dataset] = []
    lines: list[str] = []
    failed: list[Path] = []
    for root in roots:
        try:
            manifest, records, problems = parse_folder(root, None, allow_outside)
        except DataError as exc:
            lines.append(str(exc))
            failed.append(root)
            continue
        lines += [str(p) for p in problems]
        failed += [root] if problems else []
        parts.append(Dataset(root=root, manifest=manifest, records=tuple(records)))
    return parts, lines, failed


def load_datasets(
    roots: Sequence[Path | str], manifest: Path | str | None = None, allow_outside: bool = False
) -> Datasets:
    """Parse each folder (its own manifest and containment rule); DataError listing the problems of all of them."""
    paths = [Path(root) for root in roots]
    check_roots(paths, manifest)
    if len(paths) == 1:
        return Datasets((load_dataset(paths[0], manifest, allow_outside),))
    parts, lines, failed = _parse_all(paths, allow_outside)
    if lines:
        head = f"{len(lines)} problem(s) in {len(failed)} of {len(paths)} dataset folders " \
               f"(run {check_command(failed, allow_outside)})"
        raise DataError(problems_message(head, lines))
    colliding = colliding_patients([part.records for part in parts])
    labels = folder_labels(paths)
    return Datasets(tuple(dataclasses.replace(part, records=namespaced(part.records, label, colliding))
                          for part, label in zip(parts, labels)))
