"""PNG plots of a run: loss per task, task weights over time, pattern confusion matrices."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hep2edge.atomic import atomic_write_bytes
from hep2edge.labels import PATTERNS
from hep2edge.train.config import DENSE_TASKS, TASKS

Histories = dict[int, list[dict[str, Any]]]


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _tasks(histories: Histories) -> list[str]:
    """The tasks the run trained: always mask, pattern, intensity; the dense heads where the rows have them."""
    rows = [row for fold_rows in histories.values() for row in fold_rows[:1]]
    return [*TASKS, *(t for t in DENSE_TASKS if any(f"train_loss_{t}" in row for row in rows))]


def plot_losses(histories: Histories, path: Path) -> Path:
    """One panel per task: training (solid) and validation (dashed) loss per epoch, one colour per fold."""
    tasks = _tasks(histories)
    fig, axes = plt.subplots(1, len(tasks), figsize=(13 * len(tasks) / 3, 3.6))
    for ax, task in zip(axes, tasks):
        for fold, rows in histories.items():
            epochs = [r["epoch"] for r in rows]
            line = ax.plot(epochs, [r[f"train_loss_{task}"] for r in rows], label=f"fold {fold} train")[0]
            if rows and f"val_loss_{task}" in rows[0]:
                ax.plot(epochs, [r[f"val_loss_{task}"] for r in rows], "--", color=line.get_color(),
                        label=f"fold {fold} val")
        ax.set_title(f"{task} loss")
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_weights(histories: Histories, path: Path) -> Path:
    """Mean task weight per epoch (fixed, GradNorm or uncertainty), one panel per fold."""
    fig, axes = plt.subplots(1, max(len(histories), 1), figsize=(4.2 * max(len(histories), 1), 3.4), squeeze=False)
    for ax, (fold, rows) in zip(axes[0], histories.items()):
        for task in _tasks(histories):
            ax.plot([r["epoch"] for r in rows], [r[f"weight_{task}"] for r in rows], label=task)
        ax.set_title(f"task weights, fold {fold}")
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, title: str, path: Path) -> Path:
    """Row-normalised confusion matrix with counts in the cells; rows = true pattern."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(PATTERNS))
    ax.set_xticks(ticks, PATTERNS, rotation=45, ha="right")
    ax.set_yticks(ticks, PATTERNS)
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def write_plots(out: Path, histories: Histories, confusion: dict[str, np.ndarray]) -> list[Path]:
    folder = out / "plots"
    paths = [plot_losses(histories, folder / "losses.png"), plot_weights(histories, folder / "task_weights.png")]
    for level, matrix in confusion.items():
        paths.append(plot_confusion(matrix, f"pattern confusion ({level} level, all folds)",
                                    folder / f"confusion_{level}.png"))
    return paths
