"""Task weighting: GradNorm balances a toy problem where one task's gradients dominate."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from hep2edge.errors import RegistryError  # noqa: E402
from hep2edge.train.weighting import (  # noqa: E402
    FixedWeighting,
    GradNorm,
    UncertaintyWeighting,
    build_weighting,
    load_weighting_state,
    task_gradient_norms,
    weighting_state,
)


def _toy_problem(seed: int = 0) -> tuple[Any, list[Any], Any, list[Any]]:
    """A shared linear layer feeding two heads; task 0's loss is scaled so its gradients dominate."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.nn.Linear(8, 16)
    heads = [torch.nn.Linear(16, 1), torch.nn.Linear(16, 1)]
    x = torch.randn(64, 8, generator=gen)
    targets = [torch.randn(64, 1, generator=gen), torch.randn(64, 1, generator=gen)]
    return shared, heads, x, targets


def _losses(shared: Any, heads: list[Any], x: Any, targets: list[Any]) -> Any:
    features = torch.relu(shared(x))
    scales = (100.0, 1.0)
    return torch.stack([s * ((h(features) - t) ** 2).mean() for s, h, t in zip(scales, heads, targets)])


def test_gradnorm_moves_weights_toward_balance_and_keeps_their_sum() -> None:
    torch.manual_seed(0)
    shared, heads, x, targets = _toy_problem()
    gradnorm = GradNorm(weights=(1.0, 1.0), alpha=0.12, lr=0.05)
    params = list(shared.parameters()) + [p for h in heads for p in h.parameters()]
    optimizer = torch.optim.SGD(params, lr=1e-4)
    first_ratio: float | None = None
    for _ in range(60):
        losses = _losses(shared, heads, x, targets)
        norms = task_gradient_norms(losses, shared.weight)
        weighted = gradnorm.current() * norms
        first_ratio = first_ratio if first_ratio is not None else float(weighted[0] / weighted[1])
        optimizer.zero_grad()
        gradnorm.total(losses).backward()
        optimizer.step()
        gradnorm.update(losses.detach(), norms)
        assert float(gradnorm.current().sum()) == pytest.approx(2.0, abs=1e-5)
    weights = gradnorm.current()
    assert weights[0] < 0.5 < 1.5 < weights[1], "the dominant task's weight must fall, the other's rise"
    final = gradnorm.current() * task_gradient_norms(_losses(shared, heads, x, targets), shared.weight)
    assert first_ratio is not None
    assert float(final[0] / final[1]) < first_ratio / 3, "weighted gradient norms must move toward each other"


def test_gradnorm_gradient_matches_the_definition() -> None:
    gradnorm = GradNorm(weights=(1.0, 1.0, 1.0), alpha=0.5)
    losses = torch.tensor([1.0, 2.0, 3.0])
    norms = torch.tensor([4.0, 1.0, 1.0])
    grad = gradnorm.gradnorm_gradient(losses, norms)  # first call: L(0) = L, so r_i = 1, target = mean(G) = 2
    assert torch.allclose(grad, torch.tensor([4.0, -1.0, -1.0]))
    # reference: autograd of sum |w_i * norm_i - target_i| with the target held constant
    w = torch.ones(3, requires_grad=True)
    torch.sum(torch.abs(w * norms - 2.0)).backward()
    assert w.grad is not None and torch.allclose(grad, w.grad)


def test_gradnorm_state_round_trip_continues_identically() -> None:
    a = GradNorm(weights=(1.0, 1.0, 1.0), alpha=0.12)
    for step in range(3):
        a.update(torch.tensor([1.0, 0.5 + step, 2.0]), torch.tensor([3.0, 1.0, 0.5]))
    b = GradNorm(weights=(1.0, 1.0, 1.0), alpha=0.12)
    load_weighting_state(b, weighting_state(a))
    for model in (a, b):
        model.update(torch.tensor([0.7, 0.9, 1.1]), torch.tensor([2.0, 1.5, 0.5]))
    assert torch.equal(a.current(), b.current())


def test_fixed_and_uncertainty_weighting() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert float(FixedWeighting((1.0, 0.5, 2.0)).total(losses)) == pytest.approx(1 + 1 + 6)
    uncertainty = UncertaintyWeighting((1.0, 1.0, 1.0))
    assert float(uncertainty.total(losses).detach()) == pytest.approx(6.0)  # s = 0: exp(0) * L + 0
    uncertainty.total(losses).backward()
    # d/ds (exp(-s) L + s) = 1 - L at s = 0: the high-loss tasks' log-variance rises (weight falls)
    assert torch.allclose(uncertainty.log_vars.grad, 1 - losses)
    assert uncertainty.optimizer_parameters() == [uncertainty.log_vars]


def test_unknown_weighting_lists_the_valid_names() -> None:
    with pytest.raises(RegistryError, match="fixed, gradnorm, uncertainty"):
        build_weighting("magic", (1.0, 1.0, 1.0), 0.1, 0.01)
