"""What a training run shows: a transient progress bar per epoch and one summary line per epoch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

CELL_KEYS = ("aji", "pq", "f1", "miou")  # per-cell figures shown when present
TASK_SHORT = {"mask": "mask", "pattern": "pat", "intensity": "int", "distance": "dist", "pattern_map": "pmap"}


class Display:
    """Prints only on the main process; `enabled=False` keeps the summary lines but drops the bars."""

    def __init__(self, main: bool = True, bars: bool = True, console: Console | None = None) -> None:
        self.main = main
        self.bars = bars and main
        self.console = console or Console(highlight=False)

    def log(self, line: str) -> None:
        if self.main:
            self.console.print(line, highlight=False, soft_wrap=True)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Any]:
        """Yields advance(n); a no-op when bars are off."""
        if not self.bars:
            yield lambda n=1: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)


def epoch_line(row: dict[str, Any], epochs: int, is_best: bool) -> str:
    """One readable line per epoch from a metrics.csv row (per-cell figures when the run scores cells)."""
    tasks = [t for t in TASK_SHORT if f"train_loss_{t}" in row]
    losses = " ".join(f"{TASK_SHORT[t]} {row[f'train_loss_{t}']:.3f}" for t in tasks)
    weights = "/".join(f"{row[f'weight_{t}']:.2f}" for t in tasks)
    cells = "".join(f" {key} {row[f'patch_{key}']:.3f}" for key in CELL_KEYS if f"patch_{key}" in row)
    return (
        f"fold {row['fold']} epoch {row['epoch']:>3}/{epochs}  train {losses}  w {weights}  "
        f"| val loss {row['val_loss']:.3f} dice {row['patch_dice']:.3f} pattern {row['patch_pattern_accuracy']:.3f} "
        f"intensity {row['patch_intensity_accuracy']:.3f}{cells} score {row['score']:.3f}"
        f"{'  *best' if is_best else ''}  ({row['seconds']:.0f}s)"
    )
