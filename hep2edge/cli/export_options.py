"""The `export` and `build-engine` options as Typer options, one per hep2edge.export.options entry (no copies)."""

from __future__ import annotations

from typing import Any

import typer

from hep2edge.export.options import ENGINE_OPTIONS, OPTIONS, default_of


def _typer_option(name: str) -> tuple[Any, Any]:
    """(annotation, typer.Option) of export option `name`, defaulted from its ExportConfig field."""
    option = OPTIONS[name]
    return option.kind, typer.Option(default_of(name), option.flag, help=option.help)


EXPORT_OPTIONS: dict[str, tuple[Any, Any]] = {name: _typer_option(name) for name in OPTIONS}
ENGINE_BUILD_OPTIONS: dict[str, tuple[Any, Any]] = {name: EXPORT_OPTIONS[name] for name in ENGINE_OPTIONS}
