"""Library errors name parameters (`batch_size`); the CLI prints the running command's flags in their place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer.main

from hep2edge.cli.app import app
from hep2edge.cli.flags import command_flags, in_flags


def test_the_running_commands_options_map_to_their_long_flags() -> None:
    group = typer.main.get_command(app)
    flags = command_flags(group, ["train", "--data", "x"])
    assert flags["batch_size"] == "--batch-size" and flags["instances"] == "--instances"
    assert command_flags(group, ["analyze"])["model"] == "--model"  # not -m
    assert command_flags(group, ["results", "to-dataset", "R"])["skip_missing"] == "--skip-missing"  # a subcommand
    assert command_flags(group, ["--version"]) == {}


def test_only_backticked_options_of_the_command_become_flags() -> None:
    flags = {"monitor": "--monitor", "pattern_map": "--pattern-map", "folds": "--folds"}
    message = "`monitor` miou needs `pattern_map`; 3 folds; `other` and `hep2edge export` stay"
    assert in_flags(message, flags) == "--monitor miou needs --pattern-map; 3 folds; `other` and `hep2edge export` stay"


def test_a_library_error_on_the_command_line_names_the_flag(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hep2edge", "train", "--data", ".", "--fold", "x"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--fold must be 'all' or a fold number, got 'x'" in result.stderr and "`" not in result.stderr
