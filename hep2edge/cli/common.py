"""Pieces every command shares: importing a stage with a clear missing-extra error, printing what was resolved."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from rich.console import Console

from hep2edge.errors import MissingExtraError
from hep2edge.workspace import config_to_dict

console = Console()

# third-party module -> the extra that installs it
EXTRA_OF = {
    "torch": "train",
    "torchvision": "train",
    "segmentation_models_pytorch": "train",
    "matplotlib": "train",
    "onnx": "export",
    "onnxslim": "export",
    "modelopt": "export",
    "onnxruntime": "onnx",
    "pycuda": "gpu",
    "tensorrt": "tensorrt",
    "fastapi": "review",
    "starlette": "review",
    "uvicorn": "review",
    "jinja2": "review",
    "python_multipart": "review",
    "hl7apy": "review",
}


def import_stage(module: str, extra_of: dict[str, str] | None = None) -> ModuleType:
    """Import a hep2edge module; a missing optional dependency becomes MissingExtraError.

    `extra_of` overrides EXTRA_OF for one command (build-engine on a Jetson wants `jetson`, not `export`).
    """
    extras = {**EXTRA_OF, **(extra_of or {})}
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in extras:
            raise MissingExtraError(top, extras[top]) from exc
        raise


def show_resolved(command: str, config: Any) -> None:
    """Print the resolved configuration of a command, one `key: value` per line."""
    data = config_to_dict(config)
    console.print(f"[bold]{command}[/bold] resolved:")
    for key, value in data.items():
        console.print(f"  {key}: {value}", highlight=False, markup=False)
