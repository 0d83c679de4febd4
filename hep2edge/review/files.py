"""The per-image files the runtime writes into RESULTS, found, checked and served safely.

Only `<stem>_overlay.png` and `<stem>_mask.png` directly inside RESULTS are ever served; any other name, a
path that leaves RESULTS (`..`, a symbolic link pointing out) or anything but a regular file is "not found".
A PNG is decoded once per (size, mtime) before it is shown: a corrupt one becomes a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hep2edge.atomic import describe_os_error
from hep2edge.runtime.sinks.files import mask_path, result_json_path

SERVED = re.compile(r"^[^/\\\x00]+_(overlay|mask)\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 256 << 20


def overlay_path(results: Path, stem: str) -> Path:
    """`<stem>_overlay.png`, written by `--overlay` (hep2edge.runtime.sinks.files.OverlaySink)."""
    return Path(results) / f"{stem}_overlay.png"


def image_files(results: Path, stem: str) -> dict[str, Path]:
    """The overlay, mask and result document of one image."""
    return {"overlay": overlay_path(results, stem), "mask": mask_path(results, stem),
            "json": result_json_path(results, stem)}


def served_file(results: Path, name: str) -> Path | None:
    """The file `name` inside RESULTS if it may be served (an overlay or mask PNG, a regular file), else None."""
    if not SERVED.match(name) or name.startswith("."):
        return None
    root = os.path.realpath(results)
    real = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(real) != root:
        return None
    try:
        return Path(real) if stat.S_ISREG(os.stat(real).st_mode) else None
    except OSError:
        return None


def png_problem(path: Path) -> str | None:
    """None if `path` is a readable, complete PNG; else what is wrong with it, in a few words."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot read ({describe_os_error(exc)})"
    return _png_problem(str(path), info.st_size, info.st_mtime_ns)


@lru_cache(maxsize=4096)
def _png_problem(path: str, size: int, mtime_ns: int) -> str | None:
    if size > MAX_PNG_BYTES:
        return f"too large ({size >> 20} MiB)"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot read ({describe_os_error(exc)})"
    if not data.startswith(PNG_SIGNATURE):
        return "not a PNG file"
    if b"IEND" not in data[-16:]:
        return "truncated PNG"
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
        return "corrupt PNG (cannot be decoded)"
    return None


def tile_evidence(results: Path, stem: str) -> tuple[list[dict[str, Any]], str | None]:
    """The per-tile records of `<stem>.json`, or ([], why they cannot be shown)."""
    path = result_json_path(results, stem)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        tiles = document["tiles"]
        if not isinstance(tiles, list):
            raise TypeError("tiles is not a list")
    except FileNotFoundError:
        return [], f"{path.name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [], f"{path.name} is unreadable ({type(exc).__name__})"
    return [t for t in tiles if isinstance(t, dict)], None
