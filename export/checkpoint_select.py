"""Which checkpoint a bare `hep2edge export` uses: the best fold of the newest training run.

The training run writes `summary.json` with `folds: [{fold, checkpoint, metrics}]` and the metric it
monitored; without a summary, the newest `*best*.pt` (else any `*.pt`) in the run folder is taken.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hep2edge.errors import ConfigError
from hep2edge.workspace import newest_run_dir

SUMMARY = "summary.json"
MONITOR_KEYS = ("monitor", "monitored_metric", "monitor_metric")
MODE_KEYS = ("monitor_mode", "mode")
FALLBACK_METRICS = ("score", "val_score", "dice", "patch.dice")
LOWER_IS_BETTER = ("loss",)


@dataclass(frozen=True)
class SelectedCheckpoint:
    """The chosen file and a sentence saying why."""

    path: Path
    reason: str


def _metric(metrics: Any, name: str) -> float | None:
    """`metrics[name]`, also through dotted paths ('patch.dice') and a nested 'val' section."""
    for candidate in (name, f"val.{name}", f"val_{name}"):
        value: Any = metrics
        for part in candidate.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            return float(value)
    return None


def _resolve(run_dir: Path, name: str) -> Path:
    path = Path(name)
    for candidate in (path, run_dir / path, run_dir / path.name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{run_dir / SUMMARY}: names checkpoint {name}, which does not exist; pass CKPT")


def _from_summary(run_dir: Path, summary: dict[str, Any]) -> SelectedCheckpoint:
    folds = [f for f in summary.get("folds") or [] if isinstance(f, dict) and f.get("checkpoint")]
    if not folds:
        raise ConfigError(f"{run_dir / SUMMARY}: lists no fold checkpoints; pass CKPT")
    monitor = next((str(summary[k]) for k in MONITOR_KEYS if summary.get(k)), None)
    names = (monitor,) if monitor else FALLBACK_METRICS
    for name in names:
        scored = [(v, f) for f in folds if (v := _metric(f.get("metrics") or {}, name)) is not None]
        if scored:
            mode = next((str(summary[k]) for k in MODE_KEYS if summary.get(k)), "")
            lower = mode == "min" or (not mode and any(w in name for w in LOWER_IS_BETTER))
            value, best = min(scored, key=lambda s: s[0]) if lower else max(scored, key=lambda s: s[0])
            reason = f"fold {best.get('fold')} of {run_dir} has the best {name} ({value:.4f})"
            return SelectedCheckpoint(_resolve(run_dir, str(best["checkpoint"])), reason)
    fold = folds[0]
    reason = f"fold {fold.get('fold')} of {run_dir} (summary has no monitored metric to compare)"
    return SelectedCheckpoint(_resolve(run_dir, str(fold["checkpoint"])), reason)


def _from_files(run_dir: Path) -> SelectedCheckpoint:
    files = sorted(run_dir.rglob("*best*.pt")) or sorted(run_dir.rglob("*.pt"))
    if not files:
        raise ConfigError(f"{run_dir}: no summary.json and no *.pt checkpoint; pass CKPT")
    newest = max(files, key=lambda p: p.stat().st_mtime)
    return SelectedCheckpoint(newest, f"newest checkpoint in {run_dir} (no {SUMMARY})")


def select_checkpoint(runs_root: Path | None = None) -> SelectedCheckpoint:
    """The best checkpoint of the newest `runs/train/<n>`; ConfigError saying what to pass if none."""
    run_dir = newest_run_dir("train", runs_root)
    if run_dir is None:
        raise ConfigError("no checkpoint given and no runs/train/<n> here; pass CKPT (a .pt checkpoint)")
    summary_path = run_dir / SUMMARY
    if not summary_path.is_file():
        return _from_files(run_dir)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{summary_path}: unreadable ({exc.__class__.__name__}); pass CKPT") from exc
    if not isinstance(summary, dict):
        raise ConfigError(f"{summary_path}: not a JSON object; pass CKPT")
    return _from_summary(run_dir, summary)
