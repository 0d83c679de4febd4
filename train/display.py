"""What a training run shows, through a hep2edge.progress.Reporter: a progress bar per epoch, one line per epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hep2edge.progress import SILENT, Reporter

CELL_KEYS = ("aji", "pq", "f1", "miou")  # per-cell figures shown when present
TASK_SHORT = {"mask": "mask", "pattern": "pat", "intensity": "int", "distance": "dist", "pattern_map": "pmap"}


class Display:
    """A Reporter for one training process: only the main process reports; `bars=False` keeps the lines only."""

    def __init__(self, reporter: Reporter = SILENT, main: bool = True, bars: bool = True) -> None:
        self.reporter, self.main, self.bars = reporter, main, bars and main

    def say(self, text: str) -> None:
        """One line, from the main process only."""
        if self.main:
            self.reporter.say(text)

    def progress(self, task: str, done: int, total: int) -> None:
        """Progress of `task`, when bars are on."""
        if self.bars:
            self.reporter.progress(task, done, total)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yields advance(n) for the bar of `description`; the bar ends when the block does."""
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            self.progress(description, done, total)

        self.progress(description, 0, total)
        try:
            yield advance
        finally:
            if done < total:
                self.progress(description, total, total)


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
