"""The model contract: round trip through metadata and JSON, refusal of missing, other-version or malformed ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hep2edge.contract import METADATA_KEY, OUTPUTS, SCHEMA_VERSION, ModelContract, file_sha256
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


@pytest.mark.parametrize(("change", "words"), [
    ({"normalization": {"mode": "fixed"}}, "normalization is {'mode': 'fixed'}, expected an object"),
    ({"tile": "big", "unknown_field": 1}, "malformed hep2edge contract (unknown fields ['unknown_field'])"),
    ({"normalization": {"mode": "zscore", "mean": 0, "std": 1}}, "normalization mode is 'zscore'"),
])
def test_malformed_fields(change: dict, words: str) -> None:
    data = {**_contract().to_dict(), **change}
    with pytest.raises(ContractError, match=re.escape(f"m.onnx: {words}")):
        ModelContract.from_dict(data, "m.onnx")


_SEVEN = list(PATTERNS)
BAD_VALUES = [  # (field, value, words the one-line refusal must contain)
    ("tile", 0, "tile is 0, expected a multiple of 32"),
    ("tile", -64, "tile is -64"),
    ("tile", 1, "tile is 1"),
    ("tile", 48, "tile is 48"),
    ("tile", 1 << 20, "tile is 1048576"),
    ("tile", "big", "tile is 'big'"),
    ("tile", True, "tile is True"),
    ("tile", None, "tile is None"),
    ("tile", 64.5, "tile is 64.5"),
    ("mask_threshold", 0, "mask_threshold is 0, expected a number between 0 and 1"),
    ("mask_threshold", 1.0, "mask_threshold is 1.0"),
    ("mask_threshold", -0.5, "mask_threshold is -0.5"),
    ("mask_threshold", "0.5", "mask_threshold is '0.5'"),
    ("mask_threshold", True, "mask_threshold is True"),
    ("mask_threshold", float("nan"), "mask_threshold is nan"),
    ("precision", "fp8", "precision is 'fp8'; valid: fp32, fp16, int8"),
    ("precision", None, "precision is None"),
    ("channels", 2, "channels is 2; valid: 1, 3"),
    ("channels", 0, "channels is 0"),
    ("channels", True, "channels is True"),
    ("channels", "1", "channels is '1'"),
    ("channel_policy", "purple", "channel_policy is 'purple'; valid:"),
    ("normalization", [0, 1], "normalization is [0, 1], expected an object with mode, mean and std"),
    ("normalization", {"mode": "fixed", "mean": 0, "std": 0}, "normalization std is 0, expected a positive"),
    ("normalization", {"mode": "fixed", "mean": 0, "std": float("inf")}, "normalization std is inf"),
    ("normalization", {"mode": "fixed", "mean": True, "std": 1}, "normalization mean is True"),
    ("normalization", {"mode": "fixed", "mean": "0", "std": 1}, "normalization mean is '0'"),
    ("normalization", {"mode": "fixed", "mean": float("nan"), "std": 1}, "normalization mean is nan"),
    ("patterns", _SEVEN[:5], "patterns lists 5 class(es) but the outputs give 7"),
    ("patterns", [*_SEVEN, "golgi"], "patterns repeats ['golgi']"),
    ("patterns", [*_SEVEN[:6], "cytoplasmic"], "patterns has unknown names ['cytoplasmic']"),
    ("patterns", "homogeneous", "patterns is 'homogeneous', expected a list of class names"),
    ("patterns", [1, 2, 3, 4, 5, 6, 7], "patterns is (1, 2, 3, 4, 5, 6, ...), expected a list of class names"),
    ("intensities", ["positive"], "intensities lists 1 class(es) but the outputs give 2"),
    ("intensities", ["positive", "positive"], "intensities repeats ['positive']"),
    ("outputs", {**OUTPUTS, "pattern": "(N, 5) float32 pattern probabilities"},
     "patterns lists 7 class(es) but the outputs give 5"),
    ("outputs", {"mask": OUTPUTS["mask"]}, "outputs describes ['mask'], expected ['intensity', 'mask', 'pattern']"),
    ("outputs", ["mask", "pattern", "intensity"], "outputs is ['mask', 'pattern', 'intensity'], expected an object"),
    ("input_dtype", "uint8", "input_dtype is 'uint8'; valid: float32"),
    ("input_layout", "NHWC", "input_layout is 'NHWC'; valid: NCHW"),
    ("input_name", "", "input_name is '', expected a non-empty name"),
    ("input_name", 7, "input_name is 7"),
    ("encoder", ["resnet18"], "encoder is ['resnet18'], expected a string"),
    ("weights_sha256", 12, "weights_sha256 is 12, expected a string"),
    ("hep2edge_version", None, "hep2edge_version is None, expected a string"),
]


@pytest.mark.parametrize(("name", "value", "words"), BAD_VALUES, ids=[f"{n}={v!r:.30}" for n, v, _ in BAD_VALUES])
def test_bad_values_are_refused_in_one_line(name: str, value: object, words: str) -> None:
    """Every backend reads the contract through here: a bad value is refused at load, naming the field."""
    text = json.dumps({**_contract().to_dict(), name: value})
    with pytest.raises(ContractError) as info:
        ModelContract.from_json(text, "m.onnx")
    message = str(info.value)
    assert message.startswith(f"m.onnx: {words}") and message.endswith("; re-export the model"), message
    assert "\n" not in message


def test_bad_values_are_refused_when_made_in_code() -> None:
    with pytest.raises(ContractError, match="model contract: tile is 1, expected a multiple of 32"):
        ModelContract(tile=1)
    with pytest.raises(ContractError, match="mask_threshold is 2"):
        ModelContract(tile=64, mask_threshold=2)
    with pytest.raises(ContractError, match="normalization is {.*}, expected a NormalizationSpec"):
        ModelContract(tile=64, normalization={"mode": "fixed", "mean": 0.0, "std": 1.0})  # type: ignore[arg-type]
    assert ModelContract(tile=160, channels=3, mask_threshold=0.3).tile == 160


def test_json_true_is_not_a_version() -> None:
    with pytest.raises(ContractError, match="contract version True"):
        ModelContract.from_json(json.dumps({**_contract().to_dict(), "schema_version": True}), "m.onnx")


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a": ' * 50_000, b"\xff\xfe".decode("latin-1")])
def test_deeply_nested_or_garbled_json_is_one_line(text: str) -> None:
    with pytest.raises(ContractError, match=r"^m\.onnx: contract is not valid JSON \(.*\); re-export the model$"):
        ModelContract.from_json(text, "m.onnx")


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


def test_the_model_file_name_rule_is_said_once_and_reads_back() -> None:
    from hep2edge.contract import PRECISION_NAMES, model_file_name, precision_of_file

    assert model_file_name("fp32") == "model.onnx" and model_file_name("int8") == "model.int8.onnx"
    assert model_file_name("fp32", ".engine") == "model.fp32.engine"
    for precision in PRECISION_NAMES:
        assert precision_of_file(model_file_name(precision)) == precision
        assert precision_of_file(model_file_name(precision, ".engine")) == precision
    assert precision_of_file("model.bf16.onnx") is None  # unknown: never ranked as fp32
    with pytest.raises(ContractError, match="unknown precision 'bf16'"):
        model_file_name("bf16")
