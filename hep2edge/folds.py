"""Patient-wise, pattern-stratified k-fold splits, deterministic by seed, saved as JSON for later runs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hep2edge.atomic import atomic_write_json
from hep2edge.errors import DataError

SCHEMA = "hep2edge-folds"
SCHEMA_VERSION = 1


class _Labelled(Protocol):
    @property
    def patient(self) -> str: ...

    @property
    def pattern(self) -> int: ...


def patient_patterns(records: Iterable[_Labelled]) -> dict[str, int]:
    """Each patient's pattern (the most common over its images; ties -> the lowest index)."""
    votes: dict[str, Counter[int]] = {}
    for record in records:
        votes.setdefault(str(record.patient), Counter())[int(record.pattern)] += 1
    return {p: min(c, key=lambda k: (-c[k], k)) for p, c in sorted(votes.items())}


def make_folds(records: Iterable[_Labelled], k: int = 5, seed: int = 0) -> dict[str, int]:
    """{patient: fold in 0..k-1}: patients grouped by pattern, shuffled by `seed`, dealt round-robin.

    Dealing continues across pattern groups, so folds differ in size by at most one patient and each
    fold receives every pattern that has at least k patients.
    """
    patterns = patient_patterns(records)
    if k < 2:
        raise DataError(f"need at least 2 folds, got k={k}")
    if k > len(patterns):
        raise DataError(f"cannot make {k} patient-wise folds from {len(patterns)} patient(s); lower k")
    rng = np.random.default_rng(seed)
    folds: dict[str, int] = {}
    dealt = 0
    for pattern in sorted(set(patterns.values())):
        group = sorted(p for p, q in patterns.items() if q == pattern)
        for index in rng.permutation(len(group)):
            folds[group[int(index)]] = dealt % k
            dealt += 1
    return dict(sorted(folds.items()))


def fold_patients(folds: dict[str, int], fold: int) -> tuple[list[str], list[str]]:
    """(training patients, held-out patients) for one fold."""
    if fold not in set(folds.values()):
        raise DataError(f"fold {fold} does not exist (folds: {sorted(set(folds.values()))})")
    train = sorted(p for p, f in folds.items() if f != fold)
    held = sorted(p for p, f in folds.items() if f == fold)
    return train, held


def check_folds_cover(folds: dict[str, int], records: Iterable[_Labelled], source: str = "folds") -> None:
    """Raise DataError if any record's patient has no fold (the folds were made for another dataset)."""
    missing = sorted({str(r.patient) for r in records} - set(folds))
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"{source}: {len(missing)} patient(s) of the dataset have no fold ({shown}); "
                        "delete the folds file to make new folds")


def save_folds(path: Path | str, folds: dict[str, int], meta: dict[str, Any] | None = None) -> Path:
    """Write folds (and e.g. {k, seed, dataset}) to JSON atomically."""
    path = Path(path)
    k = max(folds.values()) + 1 if folds else 0
    atomic_write_json(path, {"schema": SCHEMA, "version": SCHEMA_VERSION, "k": k,
                             "meta": meta or {}, "folds": dict(sorted(folds.items()))})
    return path


def read_folds_file(path: Path | str) -> tuple[dict[str, int], dict[str, Any]]:
    """(folds, meta) from a file written by save_folds; DataError naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: folds file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable folds JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DataError(f"{path}: not a hep2edge folds file")
    if data.get("version") != SCHEMA_VERSION:
        raise DataError(f"{path}: folds file version {data.get('version')}, expected {SCHEMA_VERSION}")
    raw = data.get("folds")
    if not isinstance(raw, dict) or not all(isinstance(v, int) and v >= 0 for v in raw.values()):
        raise DataError(f"{path}: malformed 'folds' (expected patient -> non-negative fold index)")
    meta: dict[str, Any] = data["meta"] if isinstance(data.get("meta"), dict) else {}
    return {str(p): int(f) for p, f in raw.items()}, meta


def load_folds(path: Path | str) -> dict[str, int]:
    """{patient: fold} from a file written by save_folds."""
    return read_folds_file(path)[0]
