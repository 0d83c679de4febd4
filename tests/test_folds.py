"""Patient-wise, pattern-stratified folds: deterministic, balanced, disjoint, saved and reloaded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hep2edge.data.manifest import ImageRecord
from hep2edge.errors import DataError
from hep2edge.folds import (
    check_folds_cover,
    fold_patients,
    load_folds,
    make_folds,
    patient_patterns,
    read_folds_file,
    save_folds,
)

# patients per pattern, shaped like the public set (golgi and mitsp rare)
SIZES = {0: 12, 1: 11, 2: 10, 3: 10, 4: 3, 5: 6, 6: 4}


def _records(per_image: int = 2) -> list[ImageRecord]:
    records, n = [], 0
    for pattern, count in SIZES.items():
        for _ in range(count):
            n += 1
            for k in range(per_image):
                records.append(ImageRecord(Path(f"{n:05d}_p{k + 1}.tif"), None, f"{n:05d}", pattern, n % 2, k))
    return records


def test_every_patient_in_exactly_one_fold_and_images_follow() -> None:
    records = _records()
    folds = make_folds(records, k=5, seed=0)
    assert set(folds) == {r.patient for r in records}
    assert set(folds.values()) == set(range(5))
    for k in range(5):
        train, held = fold_patients(folds, k)
        assert not set(train) & set(held) and len(train) + len(held) == len(folds)


def test_stratified_and_balanced() -> None:
    records = _records()
    folds = make_folds(records, k=5, seed=3)
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1
    patterns = patient_patterns(records)
    for pattern, count in SIZES.items():
        per_fold = Counter(folds[p] for p, q in patterns.items() if q == pattern)
        if count >= 5:
            assert set(per_fold) == set(range(5)), pattern  # every fold sees every common pattern
        assert max(per_fold.values()) - min(per_fold.get(k, 0) for k in range(5)) <= 1  # dealt evenly


def test_deterministic_by_seed() -> None:
    records = _records()
    assert make_folds(records, 5, seed=1) == make_folds(list(reversed(records)), 5, seed=1)
    assert make_folds(records, 5, seed=1) != make_folds(records, 5, seed=2)


def test_too_many_folds() -> None:
    records = _records()[:6]  # 3 patients
    with pytest.raises(DataError, match="cannot make 5 patient-wise folds from 3 patient"):
        make_folds(records, k=5)
    with pytest.raises(DataError, match="at least 2 folds"):
        make_folds(records, k=1)
    assert sorted(make_folds(records, k=3).values()) == [0, 1, 2]


def test_majority_pattern_per_patient() -> None:
    records = _records()[:2]
    odd = ImageRecord(Path("x.tif"), None, records[0].patient, 5, 0, 9)
    assert patient_patterns([records[0], odd, odd]) == {records[0].patient: 5}
    assert patient_patterns([records[0], odd]) == {records[0].patient: 0}  # tie -> lowest index


def test_save_and_load(tmp_path: Path) -> None:
    folds = make_folds(_records(), k=5, seed=0)
    path = save_folds(tmp_path / "folds.json", folds, {"k": 5, "seed": 0, "dataset": "x"})
    assert load_folds(path) == folds
    loaded, meta = read_folds_file(path)
    assert meta == {"k": 5, "seed": 0, "dataset": "x"}
    assert json.loads(path.read_text())["k"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["folds.json"]


@pytest.mark.parametrize("text, message", [
    (None, "folds file not found"),
    ("{oops", "not a readable folds JSON"),
    ('{"schema": "other"}', "not a hep2edge folds file"),
    ('{"schema": "hep2edge-folds", "version": 9, "folds": {}}', "version 9"),
    ('{"schema": "hep2edge-folds", "version": 1, "folds": {"a": -1}}', "malformed 'folds'"),
])
def test_load_errors_name_the_file(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "folds.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_folds(path)
    assert str(path) in str(info.value)


def test_folds_must_cover_the_dataset() -> None:
    records = _records()
    folds = make_folds(records, k=5)
    check_folds_cover(folds, records)
    del folds[records[0].patient]
    with pytest.raises(DataError, match="1 patient"):
        check_folds_cover(folds, records, "folds.json")
    with pytest.raises(DataError, match="fold 7 does not exist"):
        fold_patients(folds, 7)
