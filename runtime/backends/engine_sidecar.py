"""The JSON sidecar next to a TensorRT engine: the model contract plus what the engine was built for.

`model.fp16.engine` -> `model.fp16.engine.json`. The engine bytes stay a plain plan file (trtexec,
Polygraphy, Triton load it as is). Importable without TensorRT.
"""

from __future__ import annotations

import json
import reprlib
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


REBUILD = "rebuild the engine with `hep2edge build-engine`"


def _first(data: dict[str, Any], keys: tuple[str, ...], source: str) -> str:
    for key in keys:
        if key in data:
            value = data[key]
            cc = key in ("compute_capability", "sm")
            if not _scalar(value) and not (cc and isinstance(value, list) and all(map(_scalar, value))):
                raise ContractError(f"{source}: sidecar '{key}' is {reprlib.repr(value)}; {REBUILD}")
            return normalise_cc(value) if cc else str(value)
    raise ContractError(f"{source}: sidecar lacks '{keys[0]}'; {REBUILD}")


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _object(value: object, what: str, source: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{source}: sidecar {what} is not a JSON object; {REBUILD}")
    return value


def _load(engine: Path, path: Path) -> dict[str, Any]:
    """The sidecar's JSON object; one ContractError for missing, unreadable, not UTF-8, not JSON, too deep."""
    try:
        if not path.is_file():
            raise ContractError(f"{engine}: no sidecar {path.name} (the model contract); {REBUILD}")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: UnicodeDecodeError, JSONDecodeError
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ContractError(f"{path}: unreadable sidecar ({exc.__class__.__name__}: {detail}); {REBUILD}") from None
    return _object(data, "file", path)


def read_sidecar(engine: Path) -> EngineSidecar:
    """Parse `<engine>.json`; any problem with it is one ContractError naming the file and what to do."""
    path = sidecar_path(engine)
    data = _load(engine, path)
    contract_data = _object(data.get("contract", data), "'contract'", path)
    known = set(ModelContract.__dataclass_fields__)
    contract = ModelContract.from_dict({k: v for k, v in contract_data.items() if k in known}, str(path))
    build = _object(data.get("build", data), "'build'", path)
    return EngineSidecar(
        contract=contract,
        tensorrt_version=_first(build, BUILD_KEYS["tensorrt_version"], str(path)),
        gpu_name=_first(build, BUILD_KEYS["gpu_name"], str(path)),
        compute_capability=_first(build, BUILD_KEYS["compute_capability"], str(path)),
    )
