"""The model contract: what every exported model carries and every backend checks on load.

It travels in ONNX `metadata_props` (key `hep2edge.contract`, JSON) and in a sidecar JSON next to an
engine, never inside the engine bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeGuard

from hep2edge import __version__
from hep2edge.errors import ContractError
from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.normalization import MODES, NormalizationSpec

SCHEMA = "hep2edge-model"
SCHEMA_VERSION = 1
METADATA_KEY = "hep2edge.contract"
INPUT_NAME = "image"
OUTPUTS: dict[str, str] = {
    "mask": "(N, 1, t, t) float32 foreground probability (sigmoid applied)",
    "pattern": "(N, 7) float32 pattern probabilities (softmax applied), class order = patterns",
    "intensity": "(N, 1) float32 probability of 'positive' intensity (sigmoid applied)",
}
# Whole-field inference: the heads as maps over FIELD_STRIDE px cells of an input of any multiple of that size.
# Pooling is linear, so the mean of a map over a region, activated, is the head pooled over that region.
FIELD_STRIDE = 32
FIELD_OUTPUTS: dict[str, str] = {
    "pattern_logits": "(N, 7, H/32, W/32) float32 pattern logits of each 32 px cell (mean over a region, softmax)",
    "intensity_logits": "(N, 1, H/32, W/32) float32 intensity logit of each 32 px cell (mean over a region, sigmoid)",
}
# Per-cell analysis: dense heads a model may have (chosen at training time: `train --instances --pattern-map`)
CELL_OUTPUTS: dict[str, str] = {
    "distance": "(N, 1, H, W) float32 distance to the cell's edge over the cell's largest (sigmoid applied)",
    "pattern_map": "(N, 8, H, W) float32 per-pixel probabilities of background + the 7 patterns (softmax applied)",
}
OPTIONAL_OUTPUTS: dict[str, str] = {**FIELD_OUTPUTS, **CELL_OUTPUTS}
PRECISION_NAMES = ("fp32", "fp16", "int8")
MODEL_STEM = "model"  # exported files: model.onnx (fp32), model.<precision>.onnx, model.<precision>.engine


def model_file_name(precision: str, suffix: str = ".onnx") -> str:
    """The file-name rule of exported models: `model.onnx` for fp32 ONNX, else `model.<precision><suffix>`."""
    if precision not in PRECISION_NAMES:
        raise ContractError(f"unknown precision '{precision}'; valid: {', '.join(PRECISION_NAMES)}")
    return f"{MODEL_STEM}{suffix}" if (precision, suffix) == ("fp32", ".onnx") else f"{MODEL_STEM}.{precision}{suffix}"


def precision_of_file(name: str) -> str | None:
    """The precision a model file's name states (`x.fp16.onnx` -> fp16, `x.onnx` -> fp32), None for one this
    hep2edge does not know (`model.bf16.onnx`)."""
    parts = name.split(".")
    if len(parts) <= 2:
        return "fp32"
    return parts[-2] if parts[-2] in PRECISION_NAMES else None
TILE_MULTIPLE, MAX_TILE = 32, 4096  # smp U-Nets halve the tile 5 times; train/config.py asks the same
CHANNELS = (1, 3)
INPUT_DTYPES = ("float32",)  # every backend feeds float32 (fp16/int8 graphs keep float32 I/O)
INPUT_LAYOUTS = ("NCHW",)
FIX = "re-export the model"


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
    field_stride: int = 0  # FIELD_STRIDE: any H, W (multiples of it) and FIELD_OUTPUTS; 0: tiles only
    instances: dict[str, Any] = field(default_factory=dict)  # hep2edge.instances.InstanceParams fields; {}: defaults
    hep2edge_version: str = __version__
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problem = contract_problem({f.name: getattr(self, f.name) for f in fields(self)})
        if problem:
            raise _FieldError(problem)

    @property
    def model_id(self) -> str:
        """Short identifier of the trained weights, shown in results."""
        return f"{self.encoder}-{self.weights_sha256[:12]}"

    @property
    def cell_outputs(self) -> tuple[str, ...]:
        """The per-cell dense heads this model has (CELL_OUTPUTS names), in their declared order."""
        return tuple(name for name in CELL_OUTPUTS if name in self.outputs)

    def with_cell_outputs(self, names: tuple[str, ...]) -> ModelContract:
        """This contract for a graph that also has the dense heads `names` (CELL_OUTPUTS keys)."""
        return replace(self, outputs={**self.outputs, **{name: CELL_OUTPUTS[name] for name in names}})

    @property
    def whole_field(self) -> bool:
        """Whether the model runs on a whole field (`--inference field`), not only on tiles."""
        return self.field_stride > 0

    def with_field_outputs(self) -> ModelContract:
        """This contract for a graph that also has FIELD_OUTPUTS and takes any multiple of FIELD_STRIDE."""
        return replace(self, field_stride=FIELD_STRIDE, outputs={**self.outputs, **FIELD_OUTPUTS})

    def with_precision(self, precision: str) -> ModelContract:
        if precision not in PRECISION_NAMES:
            raise ContractError(f"unknown precision '{precision}'; valid: {', '.join(PRECISION_NAMES)}")
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
    def from_dict(cls, data: Mapping[str, Any], source: str = "model") -> ModelContract:
        """Parse and check a contract; raise ContractError naming `source` on any mismatch."""
        if not isinstance(data, Mapping):
            raise ContractError(f"{source}: contract is not a JSON object; {FIX}")
        if data.get("schema") != SCHEMA:
            raise ContractError(f"{source}: not a hep2edge model (no '{SCHEMA}' contract); re-export it")
        version = data.get("schema_version")
        if not _is_int(version) or version != SCHEMA_VERSION:
            raise ContractError(
                f"{source}: contract version {_show(version)} but this hep2edge "
                f"({__version__}) reads version {SCHEMA_VERSION}; re-export the model with this version"
            )
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown or "tile" not in data:
            why = f"unknown fields {unknown}" if unknown else "no 'tile'"
            raise ContractError(f"{source}: malformed hep2edge contract ({why}); {FIX}")
        try:
            return cls(**_decode(data))
        except _FieldError as exc:
            raise ContractError(f"{source}: {exc.problem}; {FIX}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelContract:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise ContractError(f"{source}: contract is not valid JSON ({exc}); {FIX}") from None
        if not isinstance(data, dict):
            raise ContractError(f"{source}: contract is not a JSON object; {FIX}")
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


# --- field checks: a contract is checked whole when made, so every backend refuses a bad one at load ---------
class _FieldError(ContractError):
    """A contract field of the wrong type or out of range; `problem` reads '<field> <what is wrong>'."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"model contract: {problem}")
        self.problem = problem


def _show(value: object) -> str:
    return reprlib.repr(value)


def _is_int(value: object) -> TypeGuard[int]:
    """An integer, and not a bool (JSON `true` is not a tile size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: object) -> str | None:
    return None if isinstance(value, str) else f"is {_show(value)}, expected a string"


def _name(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"is {_show(value)}, expected a non-empty name"


def _one_of(valid: tuple[object, ...]) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        ok = isinstance(value, type(valid[0])) and not isinstance(value, bool) and value in valid
        return None if ok else f"is {_show(value)}; valid: {', '.join(map(str, valid))}"

    return check


def _tile(value: object) -> str | None:
    if _is_int(value) and TILE_MULTIPLE <= value <= MAX_TILE and value % TILE_MULTIPLE == 0:
        return None
    return f"is {_show(value)}, expected a multiple of {TILE_MULTIPLE} from {TILE_MULTIPLE} to {MAX_TILE} (pixels)"


def _threshold(value: object) -> str | None:
    ok = _is_number(value) and 0 < value < 1
    return None if ok else f"is {_show(value)}, expected a number between 0 and 1 (exclusive)"


def _channel_policy(value: object) -> str | None:
    from hep2edge.imageio import channel_policy_names  # cv2: imported only when a contract is made

    names = channel_policy_names()
    return None if isinstance(value, str) and value in names else f"is {_show(value)}; valid: {', '.join(names)}"


def _normalization(value: object) -> str | None:
    spec = value.to_dict() if isinstance(value, NormalizationSpec) else value
    if not isinstance(spec, Mapping) or set(spec) != {"mode", "mean", "std"}:
        return f"is {_show(value)}, expected an object with mode, mean and std"
    mode, mean, std = spec["mode"], spec["mean"], spec["std"]
    if not isinstance(mode, str) or mode not in MODES:
        return f"mode is {_show(mode)}; valid: {', '.join(MODES)}"
    if not _is_number(mean):
        return f"mean is {_show(mean)}, expected a finite number"
    if not _is_number(std) or std <= 0:
        return f"std is {_show(std)}, expected a positive finite number"
    return None


def _outputs(value: object) -> str | None:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        return f"is {_show(value)}, expected an object of output descriptions"
    if not set(OUTPUTS) <= set(value) <= set(OUTPUTS) | set(OPTIONAL_OUTPUTS):
        return f"describes {sorted(value)}, expected {sorted(OUTPUTS)} and any of {sorted(OPTIONAL_OUTPUTS)}"
    return None


def _pattern_width(outputs: Mapping[str, str]) -> int:
    """The class count the pattern output's description gives ('(N, 7) ...'), else this hep2edge's."""
    found = re.search(r"\(N,\s*(\d+)\)", outputs["pattern"])
    return int(found.group(1)) if found else len(PATTERNS)


def _names(value: object, known: tuple[str, ...], width: int) -> str | None:
    """Class names: known, once each, as many as the output has, in this hep2edge's order."""
    if not isinstance(value, tuple) or not all(isinstance(name, str) for name in value):
        return f"is {_show(value)}, expected a list of class names"
    unknown = [name for name in value if name not in known]
    if unknown:
        return f"has unknown names {unknown}; this hep2edge knows {', '.join(known)}"
    repeated = sorted({name for name in value if value.count(name) > 1})
    if repeated:
        return f"repeats {repeated}"
    if len(value) != width:
        return f"lists {len(value)} class(es) but the outputs give {width}"
    if value != known:
        return f"class names {list(value)} differ from this hep2edge's {list(known)}"
    return None


def _instance_params(value: object) -> str | None:
    from hep2edge.instances import InstanceParams  # cv2: imported only when a contract is made

    if not isinstance(value, Mapping):
        return f"is {_show(value)}, expected an object of instance parameters"
    try:
        InstanceParams.from_dict(value)
    except ContractError as exc:
        return str(exc)
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "schema": _one_of((SCHEMA,)),
    "schema_version": _one_of((SCHEMA_VERSION,)),
    "tile": _tile,
    "channels": _one_of(CHANNELS),
    "channel_policy": _channel_policy,
    "normalization": _normalization,
    "encoder": _text,
    "precision": _one_of(PRECISION_NAMES),
    "weights_sha256": _text,
    "input_name": _name,
    "input_dtype": _one_of(INPUT_DTYPES),
    "input_layout": _one_of(INPUT_LAYOUTS),
    "outputs": _outputs,
    "mask_threshold": _threshold,
    "field_stride": _one_of((0, FIELD_STRIDE)),
    "instances": _instance_params,
    "hep2edge_version": _text,
}


def contract_problem(values: Mapping[str, Any]) -> str | None:
    """'<field> <what is wrong>' for the first bad field of a contract's values, or None."""
    for name, check in _CHECKS.items():
        problem = check(values[name])
        if problem:
            return f"{name} {problem}"
    if not isinstance(values["normalization"], NormalizationSpec):
        return f"normalization is {_show(values['normalization'])}, expected a NormalizationSpec"
    has_maps = set(FIELD_OUTPUTS) <= set(values["outputs"])
    if has_maps != bool(values["field_stride"]):
        return (f"field_stride {values['field_stride']} does not fit the outputs "
                f"(whole-field models have {sorted(FIELD_OUTPUTS)} and field_stride {FIELD_STRIDE})")
    named = (("patterns", PATTERNS, _pattern_width(values["outputs"])), ("intensities", INTENSITIES, 2))
    for name, known, width in named:
        problem = _names(values[name], known, width)
        if problem:
            return f"{name} {problem}"
    return None


def _decode(data: Mapping[str, Any]) -> dict[str, Any]:
    """Contract JSON values -> constructor arguments; a bad value is left as is for the checks to name."""
    values = dict(data)
    spec = values.get("normalization")
    if isinstance(spec, Mapping) and _normalization(spec) is None:
        values["normalization"] = NormalizationSpec(spec["mode"], float(spec["mean"]), float(spec["std"]))
    for name in ("patterns", "intensities"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    return values


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
