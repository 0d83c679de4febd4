"""The `train` command's options, one per TrainSettings field: flag, default and help all come from the field.

Settings the CLI takes as text (widths, weights, the fold) show their default as that text; the command parses
them back (hep2edge.cli.train_command).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, get_type_hints

import typer

from hep2edge.train.settings import TrainSettings

AS_TEXT: dict[str, Callable[[Any], str]] = {
    "decoder_channels": lambda widths: ",".join(str(w) for w in widths),
    "task_weights": lambda weights: ",".join(f"{w:g}" for w in weights),
    "fold": lambda fold: "all" if fold is None else str(fold),
}


def flag(name: str) -> str:
    """The long option of setting `name` (`batch_size` -> `--batch-size`)."""
    return "--" + name.replace("_", "-")


def _option(name: str, hint: Any, default: Any, help: str, toggle: bool) -> tuple[Any, Any]:
    """(annotation, typer.Option) of one setting."""
    if name == "data":  # repeatable: one folder or several
        return list[Path], typer.Option(None, flag(name), show_default=False, help=help)
    if name in AS_TEXT:
        return str, typer.Option(AS_TEXT[name](default), flag(name), help=help)
    annotation = Path if hint == Path | None else hint
    spelling = f"{flag(name)}/--no-{flag(name)[2:]}" if toggle else flag(name)
    return annotation, typer.Option(None if default is MISSING else default, spelling, help=help)


def _options() -> dict[str, tuple[Any, Any]]:
    hints = get_type_hints(TrainSettings)
    return {item.name: _option(item.name, hints[item.name], item.default, item.metadata["help"],
                               item.metadata["toggle"]) for item in fields(TrainSettings)}


TRAIN_OPTIONS = _options()
