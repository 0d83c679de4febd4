"""The model contract: round trip through metadata and JSON, refusal of missing, other-version or malformed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hep2edge.contract import METADATA_KEY, SCHEMA_VERSION, ModelContract, file_sha256
from hep2edge.errors import ContractError
from hep2edge.labels import PATTERNS
from hep2edge.normalization import NormalizationSpec


def _contract() -> ModelContract:
    return ModelContract(tile=384, encoder="efficientnet-b4", weights_sha256="ab" * 32,
                         normalization=NormalizationSpec("minmax", 0.5, 0.25), channel_policy="green")


def test_round_trip_through_metadata() -> None:
    contract = _contract()
    metadata = contract.to_metadata()
    assert list(metadata) == [METADATA_KEY]
    back = ModelContract.from_metadata(metadata, "m.onnx")
    assert back == contract
    assert back.model_id == "efficientnet-b4-" + "ab" * 6


def test_with_precision() -> None:
    assert _contract().with_precision("fp16").precision == "fp16"
    with pytest.raises(ContractError, match="unknown precision 'fp8'"):
        _contract().with_precision("fp8")


def test_missing_contract_is_refused_with_a_fix() -> None:
    with pytest.raises(ContractError, match="m.onnx: carries no hep2edge contract.*hep2edge export"):
        ModelContract.from_metadata({"producer": "x"}, "m.onnx")


def test_other_version_is_refused() -> None:
    data = _contract().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ContractError, match=f"contract version {SCHEMA_VERSION + 1}.*re-export"):
        ModelContract.from_dict(data, "m.onnx")


def test_not_a_hep2edge_contract() -> None:
    with pytest.raises(ContractError, match="not a hep2edge model"):
        ModelContract.from_dict({"schema": "other"}, "m.onnx")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_malformed_json(text: str) -> None:
    with pytest.raises(ContractError, match="m.onnx"):
        ModelContract.from_json(text, "m.onnx")


@pytest.mark.parametrize("change", [
    {"normalization": {"mode": "fixed"}},  # missing mean/std
    {"tile": "big", "unknown_field": 1},
    {"normalization": {"mode": "zscore", "mean": 0, "std": 1}},
])
def test_malformed_fields(change: dict) -> None:
    data = {**_contract().to_dict(), **change}
    with pytest.raises(ContractError, match="m.onnx: malformed"):
        ModelContract.from_dict(data, "m.onnx")


def test_other_class_names_are_refused() -> None:
    data = _contract().to_dict()
    data["patterns"] = list(reversed(PATTERNS))
    with pytest.raises(ContractError, match="class names"):
        ModelContract.from_dict(data, "m.onnx")


def test_json_is_stable_and_sha(tmp_path: Path) -> None:
    text = _contract().to_json()
    assert json.loads(text)["tile"] == 384
    assert ModelContract.from_json(text) == _contract()
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
