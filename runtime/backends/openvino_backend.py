"""OpenVINO backend: the exported ONNX files as they are (fp32, fp16, and the INT8 Q/DQ file, which OpenVINO runs
as real int8), on an Intel or AMD CPU, or an Intel GPU / NPU that OpenVINO sees.

The compiled model is cached next to the model file (`.openvino_cache/`), so a restart does not recompile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from hep2edge.contract import METADATA_KEY, ModelContract
from hep2edge.errors import ConfigError, ContractError
from hep2edge.runtime.backends.base import Backend, check_io

log = logging.getLogger(__name__)
CACHE_DIR = ".openvino_cache"
DEVICE_NAMES = {"auto": "CPU", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}  # `device` -> OpenVINO device


def openvino_device(device: str, available: list[str]) -> str:
    """The OpenVINO device for `device`; ConfigError naming the devices OpenVINO sees when it is not there."""
    if device not in DEVICE_NAMES:
        raise ConfigError(f"`device` {device}: OpenVINO runs on {', '.join(sorted(DEVICE_NAMES))}")
    wanted = DEVICE_NAMES[device]
    if not any(name.split(".")[0] == wanted for name in available):
        raise ConfigError(f"`device` {device}: OpenVINO sees no {wanted} here; it sees {', '.join(available)}")
    return wanted


def precision_hint(requested: str, capabilities: list[str]) -> str:
    """`auto` -> bf16 where the device computes it natively (AVX-512 BF16 / AMX), else f32."""
    if requested != "auto":
        return requested
    return "bf16" if "BF16" in capabilities else "f32"


def read_contract(model: Any, source: str) -> ModelContract:
    """The hep2edge contract from the ONNX metadata_props OpenVINO keeps in the model's rt_info."""
    key = ["framework", METADATA_KEY]
    if not model.has_rt_info(key):
        raise ContractError(f"{source}: not a hep2edge model (no '{METADATA_KEY}' metadata); re-export it")
    return ModelContract.from_metadata({METADATA_KEY: model.get_rt_info(key).astype(str)}, source)


def _cache_dir(model_path: Path) -> Path | None:
    """A writable cache folder beside the model, or None (then every start compiles)."""
    folder = model_path.parent / CACHE_DIR
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        log.warning("%s: cannot create the OpenVINO cache (%s); compiling at every start", folder, exc.strerror)
        return None
    return folder if os.access(folder, os.W_OK) else None


class OpenVinoBackend(Backend):
    """Runs an exported ONNX model with OpenVINO; refuses files without a matching contract."""

    name = "openvino"
    _compiled: Any = None
    _request: Any = None
    _device: str = "CPU"
    _hint: str = "f32"

    def _compile(self, core: ov.Core, model: Any) -> Any:
        path = self.config.model
        self._device = openvino_device(self.config.device, list(core.available_devices))
        capabilities = list(core.get_property(self._device, "OPTIMIZATION_CAPABILITIES"))
        self._hint = precision_hint(self.config.inference_precision, capabilities)
        properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self._hint}
        cache = _cache_dir(path)
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})
        try:
            return core.compile_model(model, self._device, properties)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise ContractError(f"{path}: OpenVINO cannot compile this model for {self._device} ({first})") from exc

    def _load(self) -> ModelContract:
        path = self.config.model
        if not path.is_file():
            raise ConfigError(f"{path}: no such model file")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise ContractError(f"{path}: OpenVINO cannot read this file ({first})") from exc
        contract = read_contract(model, str(path))
        inputs, outputs = list(model.inputs), list(model.outputs)
        check_io(contract, str(path), [i.get_any_name() for i in inputs], _dims(inputs[0]) if inputs else [],
                 [o.get_any_name() for o in outputs], {o.get_any_name(): _dims(o) for o in outputs})
        self._compiled = self._compile(core, model)
        self._request = self._compiled.create_infer_request()
        return contract

    @property
    def precision(self) -> str:
        """The file's precision and the hint OpenVINO computes the rest at, e.g. `int8+bf16`."""
        return f"{self.contract.precision}+{self._hint}" if self._hint != "f32" else self.contract.precision

    def device_name(self) -> str:
        return f"{self._device.lower()} (openvino {self._device}, {self._hint})"

    def _run(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        assert self._request is not None
        results = self._request.infer({0: batch})
        by_name = {key.get_any_name(): value for key, value in results.items()}
        return {name: np.array(by_name[name], dtype=np.float32) for name in names if name in by_name}

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._run(batch, self.tile_outputs)

    def _infer_field(self, field: np.ndarray) -> dict[str, np.ndarray]:
        return self._run(field, self.field_outputs)

    def _release(self) -> None:
        self._request = None
        self._compiled = None


def _dims(port: Any) -> list[object]:
    """A port's shape with dynamic dims as None (for the contract check)."""
    return [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
