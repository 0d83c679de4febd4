"""Task weighting: how the T task losses (mask, pattern, intensity[, distance][, pattern_map]) are combined into
the one the network is trained on; every method takes T from the length of its initial weights.

- `fixed`: given weights.
- `gradnorm`: Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, "GradNorm: Gradient Normalization
  for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.
- `uncertainty`: A. Kendall, Y. Gal, R. Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
  for Scene Geometry and Semantics", CVPR 2018 (learned homoscedastic log-variances).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hep2edge.registry import Registry

Reduce = Callable[[torch.Tensor], torch.Tensor]


class TaskWeighting(nn.Module):
    """Combines (T,) task losses; `update` runs once per step after the losses are known."""

    needs_task_gradients = False

    def current(self) -> torch.Tensor:
        """(T,) the weights in use now (detached, for logging)."""
        raise NotImplementedError

    def total(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar the network's parameters are trained on."""
        return (self.current().to(losses.device) * losses).sum()

    def update(self, losses: torch.Tensor, grad_norms: torch.Tensor | None, reduce: Reduce | None = None) -> None:
        """Adapt the weights after a step; `grad_norms` are ||dL_i/dW|| on the last shared layer."""

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimizer should train (learned weights), if any."""
        return []


WEIGHTINGS: Registry[Callable[..., TaskWeighting]] = Registry("task weighting")


@WEIGHTINGS.register("fixed")
class FixedWeighting(TaskWeighting):
    """sum_i w_i L_i with the weights given."""

    weights: torch.Tensor

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0), **_: Any) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))

    def current(self) -> torch.Tensor:
        return self.weights.detach().clone()


@WEIGHTINGS.register("gradnorm")
class GradNorm(TaskWeighting):
    """GradNorm (Chen et al., ICML 2018), in the form the seed implementation used.

    w starts at the given weights (1 each); G_i = ||d(w_i L_i)/dW|| = w_i ||dL_i/dW|| on the last
    shared layer W; r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0)); the target mean(G) * r_i^alpha is
    held constant; w takes an Adam step on the gradient of sum_i |G_i - target_i| and is then
    renormalised to sum to the number of tasks.
    """

    needs_task_gradients = True
    initial_losses: torch.Tensor
    started: torch.Tensor

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0), alpha: float = 0.12, lr: float = 0.025,
                 **_: Any) -> None:
        super().__init__()
        self.alpha = alpha
        self.weights = nn.Parameter(torch.tensor(list(weights), dtype=torch.float32))
        self.register_buffer("initial_losses", torch.zeros(len(weights)))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)

    def current(self) -> torch.Tensor:
        return self.weights.detach().clone()

    def gradnorm_gradient(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> torch.Tensor:
        """d/dw sum_i |G_i - target_i| with G_i = w_i * grad_norms_i and the target held constant."""
        if not bool(self.started):
            self.initial_losses.copy_(losses)
            self.started.fill_(True)
        w = self.weights.detach()
        gnorm = w * grad_norms
        ratio = losses / self.initial_losses.clamp_min(1e-12)
        relative = ratio / ratio.mean().clamp_min(1e-12)
        target = gnorm.mean() * relative.pow(self.alpha)
        return torch.sign(gnorm - target) * grad_norms

    def update(self, losses: torch.Tensor, grad_norms: torch.Tensor | None, reduce: Reduce | None = None) -> None:
        if grad_norms is None:
            raise ValueError("GradNorm needs the task gradient norms on the last shared layer")
        stats = torch.stack([losses.detach().float(), grad_norms.detach().float()]).cpu()
        if reduce is not None:
            stats = reduce(stats)
        if not bool(torch.isfinite(stats).all()):
            return  # a mixed-precision overflow step: leave the weights alone
        self.optimizer.zero_grad(set_to_none=True)
        self.weights.grad = self.gradnorm_gradient(stats[0], stats[1])
        self.optimizer.step()
        with torch.no_grad():
            clamped = self.weights.clamp_min(1e-4)
            self.weights.copy_(clamped * len(clamped) / clamped.sum())

    def state_dict_full(self) -> dict[str, Any]:
        """A detached copy (optimizer state dicts otherwise share their tensors with the live optimizer)."""
        return copy.deepcopy({"module": self.state_dict(), "optimizer": self.optimizer.state_dict()})

    def load_state_dict_full(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(TaskWeighting):
    """sum_i exp(-s_i) L_i + s_i with learned s_i = log sigma_i^2 (Kendall et al., CVPR 2018)."""

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0), **_: Any) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(len(weights), dtype=torch.float32))

    def current(self) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach()).clone()

    def total(self, losses: torch.Tensor) -> torch.Tensor:
        s = self.log_vars.to(losses.device)
        return (torch.exp(-s) * losses + s).sum()

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]


def build_weighting(name: str, weights: Sequence[float], alpha: float, lr: float) -> TaskWeighting:
    return WEIGHTINGS.get(name)(weights=weights, alpha=alpha, lr=lr)


def weighting_state(weighting: TaskWeighting) -> dict[str, Any]:
    """Everything needed to continue the weighting exactly (module tensors + any own optimizer)."""
    if isinstance(weighting, GradNorm):
        return weighting.state_dict_full()
    return copy.deepcopy({"module": weighting.state_dict()})


def load_weighting_state(weighting: TaskWeighting, state: dict[str, Any]) -> None:
    if isinstance(weighting, GradNorm):
        weighting.load_state_dict_full(state)
    else:
        weighting.load_state_dict(state["module"])


def task_gradient_norms(losses: torch.Tensor, shared: nn.Parameter, scale: float = 1.0) -> torch.Tensor:
    """(T,) ||d L_i / d shared||; `scale` is a mixed-precision loss scale already applied to `losses`."""
    norms = []
    for loss in losses:
        (grad,) = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        norms.append(torch.zeros((), device=shared.device) if grad is None else grad.float().norm() / scale)
    return torch.stack(norms)
