"""Multi-GPU / multi-node training under `torchrun`: process group, device, DDP wrapping, reductions.

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) everything runs as one process.
Backend: nccl when the device is CUDA, gloo otherwise (CPU tests run 2 gloo processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hep2edge.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank 0 of 1 unless launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available, else cpu; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"`device` {name}: CUDA is not available on this machine; use `device` cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise ConfigError(f"`device` {name}: valid: auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def init_distributed(device_name: str) -> DistContext:
    """Join torchrun's process group when launched by it; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=resolve_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around `model` when there is more than one process."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_across(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Mean of a small CPU tensor over all processes (identity in one process)."""
    if not ctx.distributed:
        return tensor
    out = tensor.detach().clone().to(ctx.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / ctx.world_size).cpu()


def average_gradients(ctx: DistContext, params: list[nn.Parameter]) -> None:
    """All-reduce the gradients of parameters DDP does not own (learned task weights)."""
    if not ctx.distributed:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= ctx.world_size


def broadcast_floats(ctx: DistContext, values: list[float]) -> list[float]:
    """Rank 0's values (e.g. the monitored metric, the early-stop decision) for every process."""
    if not ctx.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return [float(v) for v in tensor.cpu()]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
