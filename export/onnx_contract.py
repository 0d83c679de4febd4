"""The model contract inside an ONNX file's `metadata_props`: needs `onnx` only (no torch), so a Jetson can
check a file before building its engine."""

from __future__ import annotations

from pathlib import Path

import onnx

from hep2edge.contract import ModelContract
from hep2edge.errors import ContractError


def attach_contract(model_proto: onnx.ModelProto, contract: ModelContract) -> None:
    """Replace any hep2edge contract in `metadata_props` with `contract`."""
    metadata = contract.to_metadata()
    kept = [p for p in model_proto.metadata_props if p.key not in metadata]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_contract(model_proto: onnx.ModelProto, source: str = "model") -> ModelContract:
    """The contract an ONNX proto carries; ContractError if it has none or another version's."""
    return ModelContract.from_metadata({p.key: p.value for p in model_proto.metadata_props}, source)


def load_checked(path: Path, precision: str | None = None) -> tuple[onnx.ModelProto, ModelContract]:
    """Load an ONNX file and its contract; ContractError if it has none, another version's, or another precision."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors have no common base
        raise ContractError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from exc
    contract = read_contract(proto, str(path))
    if precision is not None and contract.precision != precision:
        raise ContractError(f"{path}: contract says precision {contract.precision}, expected {precision}")
    return proto, contract
