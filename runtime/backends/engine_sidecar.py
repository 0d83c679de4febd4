"""The JSON sidecar next to a TensorRT engine: the model contract plus what the engine was built for.

`model.fp16.engine` -> `model.fp16.engine.json`. The engine bytes stay a plain plan file (trtexec,
Polygraphy, Triton load it as is). Importable without TensorRT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hep2edge.contract import ModelContract
from hep2edge.errors import ContractError

BUILD_KEYS = {
    "tensorrt_version": ("tensorrt_version", "trt_version"),
    "gpu_name": ("gpu_name", "gpu"),
    "compute_capability": ("compute_capability", "sm"),
}


@dataclass(frozen=True)
class EngineSidecar:
    """What an engine was built from and for."""

    contract: ModelContract
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def mismatch(self, tensorrt_version: str, gpu_name: str, compute_capability: str) -> str | None:
        """Why this engine cannot run here, or None. TensorRT plans need the same major.minor and GPU arch."""
        if major_minor(tensorrt_version) != major_minor(self.tensorrt_version):
            return f"built with TensorRT {self.tensorrt_version}, running {tensorrt_version}"
        if normalise_cc(compute_capability) != normalise_cc(self.compute_capability):
            return (
                f"built for {self.gpu_name} (compute capability {self.compute_capability}), "
                f"running on {gpu_name} ({compute_capability})"
            )
        return None


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def normalise_cc(value: object) -> str:
    """'8.7', (8, 7), '87', 'sm_87' -> '8.7'."""
    if isinstance(value, (list, tuple)):
        return ".".join(str(v) for v in value[:2])
    text = str(value).lower().removeprefix("sm_").removeprefix("sm")
    if "." not in text and text.isdigit() and len(text) >= 2:
        return f"{text[:-1]}.{text[-1]}"
    return text


def _first(data: dict[str, Any], keys: tuple[str, ...], source: str) -> str:
    for key in keys:
        if key in data:
            value = data[key]
            return normalise_cc(value) if key in ("compute_capability", "sm") else str(value)
    raise ContractError(f"{source}: sidecar lacks '{keys[0]}'; rebuild the engine with `hep2edge build-engine`")


def read_sidecar(engine: Path) -> EngineSidecar:
    """Parse `<engine>.json`; ContractError saying what to do when it is missing or malformed."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise ContractError(
            f"{engine}: no sidecar {path.name} (the model contract); rebuild it with `hep2edge build-engine`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"{path}: unreadable sidecar ({exc.__class__.__name__}); rebuild the engine") from exc
    if not isinstance(data, dict):
        raise ContractError(f"{path}: sidecar is not a JSON object; rebuild the engine")
    contract_data = data.get("contract", data)
    if not isinstance(contract_data, dict):
        raise ContractError(f"{path}: sidecar 'contract' is not an object; rebuild the engine")
    known = set(ModelContract.__dataclass_fields__)
    contract = ModelContract.from_dict({k: v for k, v in contract_data.items() if k in known}, str(path))
    build = data.get("build", data)
    return EngineSidecar(
        contract=contract,
        tensorrt_version=_first(build, BUILD_KEYS["tensorrt_version"], str(path)),
        gpu_name=_first(build, BUILD_KEYS["gpu_name"], str(path)),
        compute_capability=_first(build, BUILD_KEYS["compute_capability"], str(path)),
    )
