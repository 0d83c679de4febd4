"""Run the `hep2edge` console entry point as a user would call it: in-process, or in a fresh interpreter where some
libraries cannot be imported (a box without that extra). Shared by the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

_WITHOUT = """import sys
BLOCKED = {blocked!r}
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
        return None
sys.meta_path.insert(0, _Block())
from hep2edge.cli.app import main
sys.argv = ['hep2edge', *sys.argv[1:]]
main()
"""


def run_cli_without(blocked: tuple[str, ...], args: list[str], cwd: Path,
                    env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`hep2edge ARGS...` in a new interpreter in which importing any of the `blocked` top-level packages fails."""
    return subprocess.run([sys.executable, "-c", _WITHOUT.format(blocked=blocked), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`hep2edge ARGS...` in this process; returns its exit code (0 when it returns normally)."""
    from hep2edge.cli.app import main

    monkeypatch.setattr(sys, "argv", ["hep2edge", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
