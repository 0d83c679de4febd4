"""Export options, checkpoint selection and the pieces decided before any heavy work."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hep2edge.errors import ConfigError
from hep2edge.export.checkpoint_select import select_checkpoint
from hep2edge.export.config import (
    INT8_EXCLUSION_RULES,
    BatchProfile,
    ExportConfig,
    Int8Options,
    parse_batch,
    parse_names,
    parse_precisions,
)
from hep2edge.export.tiles import patient_key, resolve_selection, spread_over_patients


def test_precisions_repeatable_comma_separated_fp32_always_first() -> None:
    assert parse_precisions(None) == ("fp32",)
    assert parse_precisions(["int8,fp16", "fp16"]) == ("fp32", "fp16", "int8")
    assert parse_precisions([" FP16 "]) == ("fp32", "fp16")
    with pytest.raises(ConfigError, match="--precision bf16: valid precisions are fp32, fp16, int8"):
        parse_precisions(["fp16,bf16"])


def test_batch_profile_parsing_and_order() -> None:
    assert parse_batch("1,8,16") == BatchProfile(1, 8, 16)
    assert parse_batch("4") == BatchProfile(4, 4, 4)
    assert parse_batch(None) == BatchProfile()
    assert BatchProfile(1, 2, 3).shapes(1, 64)["max"] == (3, 1, 64, 64)
    for bad in ("1,2", "a,b,c", "8,4,16", "0,1,1"):
        with pytest.raises(ConfigError, match="--batch"):
            parse_batch(bad)


def test_options_are_checked_when_built() -> None:
    with pytest.raises(ConfigError, match="--calib-method minmax: valid methods are entropy, max"):
        Int8Options(calib_method="minmax")
    with pytest.raises(ConfigError, match="--int8-exclude convs: valid rules are"):
        Int8Options(exclude_rules=("convs",))
    with pytest.raises(ConfigError, match=r"--int8-exclude-nodes '_blocks\.\(1': not a regular expression"):
        Int8Options(exclude_nodes=("_blocks.(1",))
    with pytest.raises(ConfigError, match="opset 17 or newer"):
        ExportConfig(opset=13)
    with pytest.raises(ConfigError, match="--workspace"):
        ExportConfig(workspace_gib=0)
    assert parse_names(["a,b", "b", " c "]) == ("a", "b", "c")


def test_cheap_rule_names_match_the_int8_registry() -> None:
    pytest.importorskip("onnx")
    from hep2edge.export.int8.quantize import EXCLUSIONS

    assert tuple(EXCLUSIONS.names()) == INT8_EXCLUSION_RULES


def _touch(path: Path, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def _summary(run: Path, monitor: str, mode: str, values: list[float]) -> None:
    folds = []
    for fold, value in enumerate(values):
        _touch(run / f"fold_{fold}" / "best.pt")
        folds.append({"fold": fold, "checkpoint": f"fold_{fold}/best.pt",
                      "metrics": {"score": value, "val_loss": value, "patch": {"dice": value}}})
    (run / "summary.json").write_text(json.dumps({"monitor": monitor, "monitor_mode": mode, "folds": folds}))


def test_bare_export_takes_best_fold_of_newest_run(tmp_path: Path) -> None:
    _summary(tmp_path / "train" / "1", "score", "max", [0.9, 0.1])
    _summary(tmp_path / "train" / "2", "patch.dice", "max", [0.2, 0.7, 0.5])
    chosen = select_checkpoint(tmp_path)
    assert chosen.path == tmp_path / "train" / "2" / "fold_1" / "best.pt"
    assert "fold 1" in chosen.reason and "patch.dice" in chosen.reason and "0.7000" in chosen.reason


def test_lower_is_better_monitor(tmp_path: Path) -> None:
    _summary(tmp_path / "train" / "1", "val_loss", "min", [0.3, 0.1, 0.2])
    assert select_checkpoint(tmp_path).path.parent.name == "fold_1"


def test_without_summary_newest_best_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "train" / "3"
    _touch(run / "fold_0" / "best.pt", age=100)
    newest = _touch(run / "fold_1" / "best.pt")
    _touch(run / "fold_1" / "last.pt")
    chosen = select_checkpoint(tmp_path)
    assert chosen.path == newest and "no summary.json" in chosen.reason


def test_no_training_run_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass CKPT"):
        select_checkpoint(tmp_path)
    (tmp_path / "train" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no summary.json and no \\*.pt checkpoint; pass CKPT"):
        select_checkpoint(tmp_path)


def test_data_selection_from_checkpoint_or_flag(tmp_path: Path) -> None:
    data = {"root": str(tmp_path), "train_patients": ["00001", "00002"], "val_patients": ["3"]}
    ckpt = tmp_path / "c.pt"
    train = resolve_selection(None, "--calib-data", data, ("train_patients",), ckpt)
    assert train.root == tmp_path and train.patients == frozenset({"1", "2"}) and not train.allow_outside
    outside = {**data, "allow_outside": True}
    trained_outside = resolve_selection(None, "--calib-data", outside, ("train_patients",), ckpt)
    assert trained_outside.allow_outside  # trained with --allow-outside: export reads the same manifest
    flagged = resolve_selection(tmp_path / "other", "--val-data", data, ("val_patients",), ckpt)
    assert flagged.patients is None and flagged.root == tmp_path / "other"
    with pytest.raises(ConfigError, match=r"c.pt: checkpoint records no dataset and fold patients; pass --val-data"):
        resolve_selection(None, "--val-data", {}, ("val_patients",), ckpt)
    moved = {**data, "root": str(tmp_path / "gone")}
    with pytest.raises(ConfigError, match="which is not here; pass --calib-data"):
        resolve_selection(None, "--calib-data", moved, ("train_patients",), ckpt)
    assert patient_key("00012") == patient_key(12) == "12"


def test_images_spread_over_patients() -> None:
    class Rec:
        def __init__(self, patient: str, k: int) -> None:
            self.patient, self.image = patient, f"{patient}_p{k}"

    records = [Rec(p, k) for p in ("1", "2", "3") for k in range(4)]
    chosen = spread_over_patients(records, 3, seed=0)
    assert sorted(r.patient for r in chosen) == ["1", "2", "3"]
    assert len(spread_over_patients(records, 50, seed=0)) == 12
    first, again = spread_over_patients(records, 5, 1), spread_over_patients(records, 5, 1)
    assert [r.image for r in first] == [r.image for r in again]  # seeded
