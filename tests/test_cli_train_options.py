"""The train settings are declared once (hep2edge.train.settings): `hep2edge train` offers exactly one option per
field, with the field's default and help, hep2edge.yaml keys are those names, and default options resolve to the
library's defaults."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import pytest
import typer.main

from hep2edge.cli.app import app
from hep2edge.cli.train_options import AS_TEXT, TRAIN_OPTIONS
from hep2edge.train.settings import TrainSettings
from hep2edge.workspace import unknown_defaults


def _train_options() -> dict[str, Any]:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params if p.param_type_name == "option" and p.name}


def test_train_offers_exactly_one_option_per_setting() -> None:
    assert list(_train_options()) == [item.name for item in fields(TrainSettings)] == list(TRAIN_OPTIONS)


@pytest.mark.parametrize("item", fields(TrainSettings), ids=lambda item: item.name)
def test_each_option_has_its_fields_flag_default_and_help(item: Field[Any]) -> None:
    option = _train_options()[item.name]
    assert option.opts[0] == "--" + item.name.replace("_", "-")
    assert option.help == item.metadata["help"]
    if item.default is MISSING:
        assert option.default is None
    else:
        assert option.default == (AS_TEXT[item.name](item.default) if item.name in AS_TEXT else item.default)


def test_hep2edge_yaml_keys_are_the_setting_names() -> None:
    names = {item.name for item in fields(TrainSettings)}
    options = {"train": set(_train_options())}
    assert unknown_defaults({"train": dict.fromkeys(names)}, options) == []
    assert unknown_defaults({"train": {"batch_sise": 4}}, options) == [
        "'train.batch_sise' is not an option of train (did you mean 'batch_size'?)"]


def test_default_options_resolve_to_the_library_defaults(synth_tiny: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    import hep2edge.train.run
    from hep2edge.cli import train_command
    from hep2edge.train.config import TrainConfig

    seen: list[TrainConfig] = []

    def run_training(config: TrainConfig, reporter: object = None) -> Path:
        seen.append(config)
        return tmp_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hep2edge.train.run, "run_training", run_training)
    monkeypatch.setattr(train_command, "_print_summary", lambda path: None)
    result = CliRunner().invoke(app, ["train", "--data", str(synth_tiny)])
    assert result.exit_code == 0, result.output
    assert seen == [TrainConfig(data=synth_tiny)]
