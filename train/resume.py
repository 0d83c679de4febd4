"""The `last.pt` training state written atomically after every epoch, and what `resume` reads back.

It holds the model, optimizer, scheduler, loss-scaler and task-weighting state, the RNG states of
python / numpy / torch and the augmenter, the epoch reached, the best score, the early-stopping
counter and the metrics history, so a run killed at any point ends where an uninterrupted one would.
Every epoch also starts from a seed derived from (seed, fold, epoch, rank), which keeps the random
streams of every process aligned after a resume, in one process or many.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hep2edge.errors import ConfigError
from hep2edge.train.checkpoint import save_checkpoint

STATE_FORMAT = "hep2edge-train-state"
LAST = "last.pt"


@dataclass
class FoldProgress:
    """Loop bookkeeping carried from epoch to epoch (and across a resume)."""

    next_epoch: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_confusion: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def epoch_seed(seed: int, fold: int, epoch: int, rank: int = 0) -> int:
    """A deterministic 63-bit seed for one (run seed, fold, epoch, rank); epoch -1 = model initialisation."""
    sequence = np.random.SeedSequence([seed, fold, epoch + 1, rank])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """python / numpy / torch RNG states as plain data (readable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic write (temp file + rename), like checkpoints."""
    save_checkpoint(path, {"format": STATE_FORMAT, **state})


def read_state(path: Path) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise ConfigError(f"{path}: unreadable training state ({exc.__class__.__name__}); "
                          "delete it to restart this fold") from exc
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path}: not a hep2edge training state")
    return data


def check_same_run(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A resumed run must use the configuration of the run it continues."""
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ[:4])
        raise ConfigError(f"{path}: `resume` with different settings ({shown}); "
                          "use the original options or another `out`")
