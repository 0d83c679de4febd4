"""Pieces every command shares: importing a stage with a clear missing-extra error, printing what was resolved."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from rich.console import Console

from hep2edge.extras import import_optional
from hep2edge.workspace import config_to_dict

console = Console()

def import_stage(module: str, extra_of: dict[str, str] | None = None) -> ModuleType:
    """Import a hep2edge module; a missing optional dependency becomes MissingExtraError (hep2edge.extras).

    `extra_of` overrides the extra for one command (build-engine on a Jetson wants `jetson`, not `export`).
    """
    return import_optional(module, extra_of)


def show_resolved(command: str, config: Any) -> None:
    """Print the resolved configuration of a command, one `key: value` per line."""
    data = config_to_dict(config)
    console.print(f"[bold]{command}[/bold] resolved:")
    for key, value in data.items():
        console.print(f"  {key}: {value}", highlight=False, markup=False)
