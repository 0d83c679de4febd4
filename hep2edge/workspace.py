"""Working-directory conventions: `hep2edge.yaml` defaults, numbered run folders, resolved configs."""

from __future__ import annotations

import dataclasses
import os
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from hep2edge.atomic import atomic_write_text
from hep2edge.errors import ConfigError

CONFIG_FILE = "hep2edge.yaml"
RUNS_DIR = "runs"
RESOLVED_CONFIG = "config.yaml"
EXPORT_REPORT_JSON = "export_report.json"  # beside the exported models; the runtime reads its whole-field verdict
EXPORT_REPORT_MD = "export_report.md"


def load_defaults(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-command option defaults from `hep2edge.yaml` ({command: {option_name: value}}).

    Keys may be written as long option names (`batch-size`) or identifiers (`batch_size`).
    """
    path = Path(path or CONFIG_FILE)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of command names to option mappings")
    defaults: dict[str, dict[str, Any]] = {}
    for command, options in data.items():
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ConfigError(f"{path}: section '{command}' must be a mapping of option names to values")
        defaults[str(command)] = {str(k).lstrip("-").replace("-", "_"): v for k, v in options.items()}
    return defaults


def unknown_defaults(defaults: dict[str, dict[str, Any]], options: dict[str, set[str]]) -> list[str]:
    """Sections and keys of hep2edge.yaml that name no command or option (a typo must not pass silently).

    `options`: command name -> its parameter names (identifiers). Returns one message per problem.
    """
    problems = []
    for command, values in defaults.items():
        if command not in options:
            hint = get_close_matches(command, list(options), n=1)
            problems.append(f"section '{command}' is not a command" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            continue
        for key in values:
            if key not in options[command]:
                hint = get_close_matches(key, sorted(options[command]), n=1)
                problems.append(f"'{command}.{key}' is not an option of {command}"
                                + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return problems


def _numbered(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def next_run_dir(command: str, root: Path | None = None) -> Path:
    """Create and return the next free `runs/<command>/<n>` folder."""
    folder = Path(root or RUNS_DIR) / command
    folder.mkdir(parents=True, exist_ok=True)
    number = (_numbered(folder) or [0])[-1] + 1
    while True:
        candidate = folder / str(number)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def newest_run_dir(command: str, root: Path | None = None) -> Path | None:
    """The highest-numbered `runs/<command>/<n>` folder, or None."""
    folder = Path(root or RUNS_DIR) / command
    numbers = _numbered(folder)
    return folder / str(numbers[-1]) if numbers else None


def resolve_out_dir(out: Path | None, command: str) -> Path:
    """`out` if given (created), else the next numbered run folder for `command`."""
    if out is None:
        return next_run_dir(command)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create output folder ({exc.strerror})") from exc
    if not os.access(out, os.W_OK):
        raise ConfigError(f"{out}: output folder is not writable")
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain YAML-able data."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def write_resolved_config(out_dir: Path, config: Any, name: str = RESOLVED_CONFIG) -> Path:
    """Write the resolved configuration next to a command's outputs."""
    path = Path(out_dir) / name
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
