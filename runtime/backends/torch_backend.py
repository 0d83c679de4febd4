"""PyTorch backend: a training checkpoint run directly (development, and the GPU stand-in without TensorRT).

As the stand-in for a TensorRT fp16 engine it runs fp16 weights, channels_last and CUDA graph replay:
`BackendConfig(torch_precision="fp16", channels_last=True, cuda_graph=True)`, on the command line
`--torch-precision fp16 --channels-last --cuda-graph`. The only runtime module that imports torch; the
registry imports it only when it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hep2edge.contract import ModelContract
from hep2edge.errors import ConfigError
from hep2edge.runtime.backends.base import Backend, output_shapes
from hep2edge.runtime.settings import TORCH_PRECISIONS, BackendConfig
from hep2edge.train.activations import activate
from hep2edge.train.checkpoint import load_checkpoint
from hep2edge.train.model import MultiTaskUnet

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
assert tuple(DTYPES) == TORCH_PRECISIONS
GRAPH_WARMUP = 3  # eager runs on a side stream before a capture (cuDNN picks its algorithms there)

Outputs = tuple[torch.Tensor, ...]  # in the backend's `tile_outputs` order


@dataclass(frozen=True)
class TorchOptions:
    """How the checkpoint runs: weight/activation precision and memory format."""

    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ConfigError(f"torch backend precision '{self.precision}'; valid: {', '.join(DTYPES)}")

    @classmethod
    def of(cls, config: BackendConfig) -> TorchOptions:
        return cls(config.torch_precision, config.channels_last)


def make_forward(model: MultiTaskUnet, options: TorchOptions, names: tuple[str, ...]
                 ) -> Callable[[torch.Tensor], Outputs]:
    """float32 NCHW batch -> float32 probabilities of the outputs `names`, computed in `options`' precision."""
    dtype = DTYPES[options.precision]
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format

    def forward(batch: torch.Tensor) -> Outputs:
        out = model(batch.to(dtype).contiguous(memory_format=memory_format))
        return tuple(activate(name, out[name].float()) for name in names)

    return forward


class CudaGraphs:
    """One CUDA graph per batch size seen, captured on first use; all share one memory pool and one input buffer.

    Safe because graphs replay one at a time on one stream and each call's outputs are copied out before
    the next replay (a later graph may reuse an earlier one's temporaries).
    """

    def __init__(self, forward: Callable[[torch.Tensor], Outputs], static_input: torch.Tensor) -> None:
        self.forward, self.static_input = forward, static_input
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, Outputs]] = {}

    def _capture(self, n: int) -> tuple[torch.cuda.CUDAGraph, Outputs]:
        batch = self.static_input[:n]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self.forward(batch)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.forward(batch)
        return graph, outputs

    def run(self, n: int) -> Outputs:
        """Replay the graph for the first `n` rows of the static input (capturing it the first time)."""
        if n not in self.graphs:
            self.graphs[n] = self._capture(n)
        graph, outputs = self.graphs[n]
        graph.replay()
        return outputs


class TorchBackend(Backend):
    """Loads a hep2edge checkpoint and applies the same activations the exported graph carries."""

    name = "torch"
    _model: MultiTaskUnet | None = None
    _device: torch.device = torch.device("cpu")

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.options = TorchOptions.of(config)
        self._forward: Callable[[torch.Tensor], Outputs] | None = None
        self._graphs: CudaGraphs | None = None
        self._host: dict[str, torch.Tensor] = {}

    @property
    def precision(self) -> str:
        return self.options.precision

    def describe(self) -> str:
        extras = [self.precision] + (["channels_last"] if self.options.channels_last else [])
        extras += ["CUDA graph"] if self._graphs is not None else []
        return f"{self.name} on {self.device_name()} ({self.config.model.name}, {', '.join(extras)})"

    def _pick_device(self) -> torch.device:
        want = self.config.device
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"`device` cuda but torch {torch.__version__} sees no GPU; use `device` cpu")
        device = torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")
        if self.config.cuda_graph and device.type != "cuda":
            raise ConfigError("`cuda_graph` needs a CUDA device; the torch backend runs on the CPU here")
        return device

    def _load(self) -> ModelContract:
        if not self.config.model.is_file():
            raise ConfigError(f"{self.config.model}: no such checkpoint file")
        self._device = self._pick_device()
        loaded = load_checkpoint(self.config.model, device=str(self._device))
        if loaded.config.in_channels != loaded.contract.channels:
            raise ConfigError(
                f"{self.config.model}: model takes {loaded.config.in_channels} channels but its contract says "
                f"{loaded.contract.channels}; re-save the checkpoint with `hep2edge train`"
            )
        model = loaded.model.eval().to(DTYPES[self.options.precision])
        if self.options.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._model = model
        self._contract = loaded.contract  # tile_outputs reads it
        self._forward = make_forward(model, self.options, self.tile_outputs)
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed tile size: let cuDNN pick the fastest kernels once
            self._allocate(loaded.contract)
        return loaded.contract

    def _allocate(self, contract: ModelContract) -> None:
        """Pinned host buffers for the I/O of the largest batch, and the CUDA graphs' static input."""
        n, c, t = self.max_batch, contract.channels, contract.tile
        outputs = output_shapes(contract, n)
        shapes = {"input": (n, c, t, t), **{name: outputs[name] for name in self.tile_outputs}}
        self._host = {name: torch.empty(shape, dtype=torch.float32).pin_memory() for name, shape in shapes.items()}
        if self.config.cuda_graph:
            assert self._forward is not None
            static = torch.empty(shapes["input"], dtype=torch.float32, device=self._device)
            self._graphs = CudaGraphs(self._forward, static)

    def device_name(self) -> str:
        return str(self._device)

    @property
    def device(self) -> torch.device:
        return self._device

    @torch.inference_mode()
    def infer_tensor(self, batch: torch.Tensor) -> Outputs:
        """(N, C, t, t) float32 already on this device -> float32 (mask, pattern, intensity) there.

        With CUDA graphs these are the graph's own buffers: read them before the next call.
        """
        assert self._forward is not None, "activate() first"
        if not 1 <= len(batch) <= self.max_batch:
            raise ValueError(f"batch of {len(batch)} tiles; this backend takes 1 to {self.max_batch}")
        if self._graphs is None:
            return self._forward(batch)
        self._graphs.static_input[: len(batch)].copy_(batch)
        return self._graphs.run(len(batch))

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._forward is not None
        if self._device.type != "cuda":
            outputs = self._forward(torch.from_numpy(batch))
            return {name: value.numpy() for name, value in zip(self.tile_outputs, outputs)}
        return self._infer_cuda(batch)

    def _infer_cuda(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Pinned H2D, forward (a graph replay where enabled), pinned D2H, one synchronisation."""
        assert self._forward is not None
        n = len(batch)
        staged = self._host["input"][:n]
        staged.numpy()[...] = batch
        if self._graphs is not None:
            self._graphs.static_input[:n].copy_(staged, non_blocking=True)
            outputs = self._graphs.run(n)
        else:
            outputs = self._forward(staged.to(self._device, non_blocking=True))
        for name, value in zip(self.tile_outputs, outputs):
            self._host[name][:n].copy_(value, non_blocking=True)
        torch.cuda.current_stream(self._device).synchronize()
        # copies: the pinned buffers are overwritten by the next call
        return {name: np.array(self._host[name][:n].numpy()) for name in self.tile_outputs}

    @torch.inference_mode()
    def infer_field_tensor(self, field: torch.Tensor) -> dict[str, torch.Tensor]:
        """(1, C, Hp, Wp) float32 on this device -> the mask probability and the heads' maps there, float32.

        Eager (no CUDA graph: field sizes vary)."""
        assert self._model is not None, "activate() first"
        memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        batch = field.to(self._device, DTYPES[self.options.precision]).contiguous(memory_format=memory_format)
        out = self._model(batch, maps=True)
        return {name: activate(name, out[name].float()) for name in self.field_outputs}

    def _infer_field(self, field: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.infer_field_tensor(torch.from_numpy(field))
        return {name: value.cpu().numpy() for name, value in outputs.items()}

    def _release(self) -> None:
        self._model = None
        self._forward = None
        self._graphs = None
        self._host = {}
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
