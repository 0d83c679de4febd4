"""Working-directory conventions: hep2edge.yaml defaults, numbered run folders, resolved configs, CLI default_map."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hep2edge.errors import ConfigError
from hep2edge.workspace import (
    config_to_dict,
    load_defaults,
    newest_run_dir,
    next_run_dir,
    resolve_out_dir,
    unknown_defaults,
    write_resolved_config,
)


def test_defaults_normalise_option_names(tmp_path: Path) -> None:
    path = tmp_path / "hep2edge.yaml"
    path.write_text("train:\n  batch-size: 8\n  --epochs: 3\n  lr_max: 0.01\nwatch:\nsynth:\n  seed: 4\n")
    assert load_defaults(path) == {"train": {"batch_size": 8, "epochs": 3, "lr_max": 0.01}, "synth": {"seed": 4}}


def test_missing_file_means_no_defaults(tmp_path: Path) -> None:
    assert load_defaults(tmp_path / "nope.yaml") == {}


@pytest.mark.parametrize("text, message", [
    ("train: [1, 2", "cannot read"),
    ("- a\n- b\n", "expected a mapping"),
    ("train: 3\n", "section 'train' must be a mapping"),
])
def test_bad_defaults_raise_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hep2edge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_defaults(path)


def test_numbered_run_dirs(tmp_path: Path) -> None:
    assert newest_run_dir("train", tmp_path) is None
    first = next_run_dir("train", tmp_path)
    second = next_run_dir("train", tmp_path)
    assert (first.name, second.name) == ("1", "2")
    (tmp_path / "train" / "notes").mkdir()
    (tmp_path / "train" / "7").mkdir()
    assert newest_run_dir("train", tmp_path) == tmp_path / "train" / "7"
    assert next_run_dir("train", tmp_path).name == "8"


def test_resolve_out_dir(tmp_path: Path) -> None:
    out = resolve_out_dir(tmp_path / "a" / "b", "export")
    assert out.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create output folder"):
        resolve_out_dir(tmp_path / "file" / "sub", "export")


@dataclass
class _Inner:
    mode: str = "fixed"


@dataclass
class _Config:
    out: Path
    size: tuple[int, int] = (10, 20)
    inner: _Inner = field(default_factory=_Inner)
    extra: dict = field(default_factory=lambda: {"a": [Path("x")]})


def test_resolved_config_written_as_plain_yaml(tmp_path: Path) -> None:
    config = _Config(out=tmp_path / "o")
    assert config_to_dict(config) == {"out": str(tmp_path / "o"), "size": [10, 20], "inner": {"mode": "fixed"},
                                      "extra": {"a": ["x"]}}
    path = write_resolved_config(tmp_path, config)
    assert path.name == "config.yaml"
    assert yaml.safe_load(path.read_text())["inner"] == {"mode": "fixed"}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hep2edge", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_takes_defaults_from_yaml_in_cwd(tmp_path: Path, synth_small: Path) -> None:
    """`hep2edge check` with no DIR uses check.data (and max-problems) from ./hep2edge.yaml."""
    (tmp_path / "hep2edge.yaml").write_text(f"check:\n  data: {synth_small}\n  max-problems: 3\n")
    result = _cli(tmp_path, "check", "--no-decode")
    assert result.returncode == 0, result.stderr
    assert "defaults from hep2edge.yaml" in result.stderr
    assert "7 patients" in result.stdout


def test_cli_flag_overrides_yaml(tmp_path: Path, synth_small: Path) -> None:
    (tmp_path / "hep2edge.yaml").write_text(f"check:\n  data: {tmp_path / 'nowhere'}\n  max-problems: 1\n")
    assert _cli(tmp_path, "check", "--no-decode").returncode == 1  # the yaml's folder does not exist
    result = _cli(tmp_path, "check", str(synth_small), "--no-decode")
    assert result.returncode == 0 and "7 patients" in result.stdout, result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "labels.csv").write_text("image,pattern,intensity\na.tif,golgi,positive\nb.tif,golgi,positive\n")
    assert "stopped after 1 problems" in _cli(tmp_path, "check", str(broken)).stdout
    assert "stopped after" not in _cli(tmp_path, "check", str(broken), "--max-problems", "9").stdout


def test_cli_missing_positional_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "hep2edge.yaml").write_text("check:\n  max-problems: 3\n")
    result = _cli(tmp_path, "check")
    assert result.returncode == 2
    assert "pass DIR or set check.data in hep2edge.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli(tmp_path, "check", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "dataset folder not found" in result.stdout


def test_cli_bad_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "hep2edge.yaml").write_text("check: [1, 2\n")
    result = _cli(tmp_path, "check", ".")
    assert result.returncode == 2
    assert "hep2edge.yaml: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_defaults_are_named_with_a_suggestion() -> None:
    options = {"train": {"epochs", "data"}, "watch": {"folder"}}
    problems = unknown_defaults({"train": {"epoch": 3, "data": "x"}, "wacth": {"folder": "/s"}}, options)
    assert problems == ["'train.epoch' is not an option of train (did you mean 'epochs'?)",
                        "section 'wacth' is not a command (did you mean 'watch'?)"]
    assert unknown_defaults({"train": {"epochs": 3}}, options) == []


def test_cli_refuses_a_typo_in_yaml(tmp_path: Path) -> None:
    (tmp_path / "hep2edge.yaml").write_text("check:\n  max_problem: 3\n")
    result = _cli(tmp_path, "check", ".")
    assert result.returncode == 2
    assert "'check.max_problem' is not an option of check (did you mean 'max_problems'?)" in result.stderr
    assert "Traceback" not in result.stderr
