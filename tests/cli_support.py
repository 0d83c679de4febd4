"""Run the `hep2edge` console entry point in-process, as a user would call it (shared by the CLI tests)."""

from __future__ import annotations

import sys

import pytest


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`hep2edge ARGS...` in this process; returns its exit code (0 when it returns normally)."""
    from hep2edge.cli.app import main

    monkeypatch.setattr(sys, "argv", ["hep2edge", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
