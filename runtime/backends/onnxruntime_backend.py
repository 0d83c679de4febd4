"""ONNX Runtime backend: fp32, fp16 (AutoCast) and int8 (Q/DQ) ONNX files with float32 I/O.

Runs on the CPU provider everywhere and on the CUDA provider where onnxruntime-gpu finds a GPU.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError, ContractError
from hep2edge.runtime.backends.base import Backend, check_io, gpu_present

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
QUIET = 3  # onnxruntime log severity: errors only (keeps the CUDA-provider fallback warning out of the log)


def cuda_provider_usable() -> bool:
    """Whether this onnxruntime build has the CUDA provider and a GPU is present (a session still checks)."""
    return CUDA_PROVIDER in ort.get_available_providers() and gpu_present()


class OnnxRuntimeBackend(Backend):
    """Runs an exported ONNX model with onnxruntime; refuses files without a matching contract."""

    name = "onnxruntime"
    _session: ort.InferenceSession | None = None

    def _providers(self) -> list[str]:
        device = self.config.device
        if device == "cuda" and not cuda_provider_usable():
            raise ConfigError(
                f"`device` cuda: this onnxruntime ({ort.__version__}) has no CUDA provider or no GPU is present; "
                "install onnxruntime-gpu on a GPU machine or use `device` cpu"
            )
        if device in ("auto", "cuda") and cuda_provider_usable():
            return [CUDA_PROVIDER, CPU_PROVIDER]
        return [CPU_PROVIDER]

    def _load(self) -> ModelContract:
        path = self.config.model
        if not path.is_file():
            raise ConfigError(f"{path}: no such model file")
        ort.set_default_logger_severity(QUIET)
        options = ort.SessionOptions()
        options.log_severity_level = QUIET
        # Q/DQ graphs run as written (the semantics TensorRT builds from and export verified): ORT's CPU int8
        # fusions moved an int8 model's mask output by 0.24 against 0.037 (export/int8/STUDY.md).
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        threads = os.environ.get("HEP2EDGE_ORT_THREADS")
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
            raise ContractError(f"{path}: onnxruntime cannot load this file ({first})") from exc
        if self.config.device == "cuda" and CUDA_PROVIDER not in session.get_providers():
            raise ConfigError(f"{path}: `device` cuda but onnxruntime found no usable GPU; use `device` cpu")
        contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
        inputs, outputs = session.get_inputs(), session.get_outputs()
        check_io(
            contract,
            str(path),
            [i.name for i in inputs],
            list(inputs[0].shape) if inputs else [],
            [o.name for o in outputs],
            {o.name: o.shape for o in outputs},  # a pattern width of 5 for 7 classes is refused here, not per batch
        )
        if inputs[0].type != "tensor(float)":
            raise ContractError(
                f"{path}: input is {inputs[0].type}, the runtime feeds float32; export with float32 I/O"
            )
        self._session = session
        return contract

    def device_name(self) -> str:
        if self._session is not None and CUDA_PROVIDER in self._session.get_providers():
            return "cuda (onnxruntime CUDA provider)"
        return "cpu"

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._session is not None
        values = self._session.run(list(self.tile_outputs), {self.contract.input_name: batch})
        return dict(zip(self.tile_outputs, values))

    def _infer_field(self, field: np.ndarray) -> dict[str, np.ndarray]:
        assert self._session is not None
        values = self._session.run(list(self.field_outputs), {self.contract.input_name: field})
        return dict(zip(self.field_outputs, values))

    def _release(self) -> None:
        self._session = None
