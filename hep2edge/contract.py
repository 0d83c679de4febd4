"""The model contract: what every exported model carries and every backend checks on load.

It travels in ONNX `metadata_props` (key `hep2edge.contract`, JSON) and in a sidecar JSON next to an
engine, never inside the engine bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hep2edge import __version__
from hep2edge.errors import ContractError
from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.normalization import NormalizationSpec

SCHEMA = "hep2edge-model"
SCHEMA_VERSION = 1
METADATA_KEY = "hep2edge.contract"
INPUT_NAME = "image"
OUTPUTS: dict[str, str] = {
    "mask": "(N, 1, t, t) float32 foreground probability (sigmoid applied)",
    "pattern": "(N, 7) float32 pattern probabilities (softmax applied), class order = patterns",
    "intensity": "(N, 1) float32 probability of 'positive' intensity (sigmoid applied)",
}
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelContract:
    """Everything a runtime must know to feed a model and read its outputs."""

    tile: int
    channels: int = 1
    channel_policy: str = "luminance"
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)
    patterns: tuple[str, ...] = PATTERNS
    intensities: tuple[str, ...] = INTENSITIES
    encoder: str = ""
    precision: str = "fp32"
    weights_sha256: str = ""
    input_name: str = INPUT_NAME
    input_dtype: str = "float32"
    input_layout: str = "NCHW"
    outputs: dict[str, str] = field(default_factory=lambda: dict(OUTPUTS))
    mask_threshold: float = 0.5
    hep2edge_version: str = __version__
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    @property
    def model_id(self) -> str:
        """Short identifier of the trained weights, shown in results."""
        return f"{self.encoder}-{self.weights_sha256[:12]}"

    def with_precision(self, precision: str) -> ModelContract:
        if precision not in PRECISIONS:
            raise ContractError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")
        return replace(self, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["normalization"] = self.normalization.to_dict()
        data["patterns"] = list(self.patterns)
        data["intensities"] = list(self.intensities)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model") -> ModelContract:
        """Parse and check a contract; raise ContractError naming `source` on any mismatch."""
        if data.get("schema") != SCHEMA:
            raise ContractError(f"{source}: not a hep2edge model (no '{SCHEMA}' contract); re-export it")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ContractError(
                f"{source}: contract version {data.get('schema_version')} but this hep2edge "
                f"({__version__}) reads version {SCHEMA_VERSION}; re-export the model with this version"
            )
        try:
            fields = dict(data)
            fields["normalization"] = NormalizationSpec.from_dict(fields["normalization"])
            fields["patterns"] = tuple(fields["patterns"])
            fields["intensities"] = tuple(fields["intensities"])
            contract = cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(f"{source}: malformed hep2edge contract ({exc}); re-export the model") from exc
        if contract.patterns != PATTERNS or contract.intensities != INTENSITIES:
            raise ContractError(
                f"{source}: class names {list(contract.patterns)} / {list(contract.intensities)} "
                f"differ from this hep2edge's {list(PATTERNS)} / {list(INTENSITIES)}"
            )
        return contract

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelContract:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{source}: contract is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ContractError(f"{source}: contract is not a JSON object")
        return cls.from_dict(data, source)

    def to_metadata(self) -> dict[str, str]:
        """Key/value pairs for ONNX metadata_props."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> ModelContract:
        if METADATA_KEY not in metadata:
            raise ContractError(
                f"{source}: carries no hep2edge contract ('{METADATA_KEY}' metadata); "
                "export it with `hep2edge export`"
            )
        return cls.from_json(metadata[METADATA_KEY], source)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
