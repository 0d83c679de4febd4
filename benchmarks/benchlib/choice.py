"""Which backend a pipeline benchmark runs: the best this machine has, as `watch --backend auto` would."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import devices
from .models import ModelSet


@dataclass(frozen=True)
class Choice:
    """Backend, model file and options, with the reason they were chosen."""

    backend: str
    model: Path
    precision: str
    device: str
    cuda_graph: bool = False
    channels_last: bool = False
    preprocess: str = "auto"
    reason: str = ""
    hint: str = "auto"  # openvino: the precision hint (auto | f32 | bf16)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = str(self.model)
        return data

    def label(self) -> str:
        extras = [x for x, on in (("channels_last", self.channels_last), ("CUDA graph", self.cuda_graph),
                                  (f"{self.hint} hint", self.backend == "openvino")) if on]
        return f"{self.backend} {self.device} {self.precision}" + (f" ({', '.join(extras)})" if extras else "")


def _tensorrt(models: ModelSet, precision: str) -> Choice | None:
    wanted = "fp16" if precision == "auto" else precision
    engine = models.engines.get(wanted)
    if not devices.tensorrt().ok or engine is None:
        return None
    return Choice("tensorrt", engine, wanted, "cuda", cuda_graph=True, reason=f"{devices.tensorrt().reason} engine")


def _torch(models: ModelSet, precision: str, device: str) -> Choice | None:
    if models.checkpoint is None:
        return None
    if device != "cpu" and devices.torch_cuda().ok:
        wanted = "fp16" if precision == "auto" else precision
        return Choice("torch", models.checkpoint, wanted, "cuda", cuda_graph=True, channels_last=True,
                      reason="no TensorRT here: torch fp16 + channels_last + CUDA graph stands in for the engine")
    if device == "cuda":
        return None
    return Choice("torch", models.checkpoint, "fp32" if precision == "auto" else precision, "cpu",
                  reason="torch on the CPU")


def _openvino(models: ModelSet, precision: str, device: str) -> Choice | None:
    """OpenVINO on the CPU with the runtime's own preference (`watch --backend auto` without an NVIDIA GPU)."""
    from hep2edge.runtime.backends.select import onnx_rule

    rule = onnx_rule("openvino")
    wanted = precision if precision != "auto" else next((p for p in rule.order if p in models.onnx), "")
    if device == "cuda" or wanted not in models.onnx or not devices.openvino().ok:
        return None
    return Choice("openvino", models.onnx[wanted], wanted, "cpu", reason=rule.why)


def _onnxruntime(models: ModelSet, precision: str, device: str) -> Choice | None:
    gpu = device != "cpu" and devices.onnxruntime_cuda().ok
    wanted = precision if precision != "auto" else ("fp16" if gpu else "fp32")
    if wanted not in models.onnx or (device == "cuda" and not gpu):
        return None
    why = "CUDA provider" if gpu else "CPU: fp32 is the fastest ONNX on a CPU"
    return Choice("onnxruntime", models.onnx[wanted], wanted, "cuda" if gpu else "cpu", reason=why)


def choose(models: ModelSet, backend: str = "auto", precision: str = "auto", device: str = "auto") -> Choice:
    """TensorRT, else torch on a GPU, else ONNX Runtime on a GPU, else OpenVINO, else ONNX Runtime (CPU), else
    torch on the CPU; ValueError if none fits."""
    options = {
        "tensorrt": lambda: _tensorrt(models, precision),
        "torch-gpu": lambda: _torch(models, precision, "cuda") if device != "cpu" else None,
        "onnxruntime-gpu": lambda: _onnxruntime(models, precision, "cuda") if device != "cpu" else None,
        "openvino": lambda: _openvino(models, precision, device),
        "onnxruntime": lambda: _onnxruntime(models, precision, device),
        "torch": lambda: _torch(models, precision, device),
    }
    order = list(options) if backend == "auto" else [k for k in options if k.split("-")[0] == backend]
    for key in order:
        picked = options[key]()
        if picked is not None:
            return picked
    raise ValueError(f"no model in {models.folder} runs with backend {backend}, precision {precision}, "
                     f"device {device} here")


def backend_config(choice: Choice, batch: int) -> Any:
    """The BackendConfig that opens `choice` with max batch `batch` (torch gets its precision and layout)."""
    from hep2edge.runtime.backends import BackendConfig

    torch = choice.backend == "torch"
    return BackendConfig(choice.model, max_batch=batch, device=choice.device, cuda_graph=choice.cuda_graph,
                         torch_precision=choice.precision if torch else "fp32", channels_last=choice.channels_last,
                         inference_precision=choice.hint)


def open_backend(choice: Choice, batch: int) -> Any:
    """The (inactive) backend of `choice` with max batch `batch`."""
    from hep2edge.runtime.backends import create_backend

    return create_backend(choice.backend, backend_config(choice, batch))
