"""The export options are declared once (hep2edge.export.options): `export` and `build-engine` offer them with their
ExportConfig field's default (formatted as the CLI takes it), hep2edge.yaml keys are the option names, and default
options build the library's default ExportConfig."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from hep2edge.cli.app import app
from hep2edge.export.config import ExportConfig, Int8Options, Limits
from hep2edge.export.options import ENGINE_OPTIONS, OPTIONS, default_of, export_config
from hep2edge.workspace import unknown_defaults


def _options(command: str) -> dict[str, Any]:
    found = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in found.params if p.param_type_name == "option" and p.name}


def test_export_offers_exactly_one_option_per_entry() -> None:
    assert list(_options("export")) == list(OPTIONS)
    assert list(_options("build-engine")) == ["out", *ENGINE_OPTIONS]


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_option_has_its_entrys_flag_default_and_help(name: str) -> None:
    for command in ("export", "build-engine"):
        option = _options(command).get(name)
        if option is None or (command == "build-engine" and name == "out"):
            continue
        assert option.opts[0] == OPTIONS[name].flag.split("/")[0]
        assert option.help == OPTIONS[name].help
        assert option.default == default_of(name)


def test_defaults_are_the_dataclass_defaults_formatted_for_the_cli() -> None:
    assert {name: default_of(name) for name in ("batch", "field_size", "workspace", "opset", "val_images")} == {
        "batch": "1,8,16", "field_size": "1040x1388", "workspace": ExportConfig().workspace_gib,
        "opset": ExportConfig().opset, "val_images": ExportConfig().val_images}
    int8, limits = Int8Options(), Limits()
    assert (default_of("calib_images"), default_of("calib_method"), default_of("int8_high_precision")) == (
        int8.calib_images, int8.calib_method, int8.high_precision)
    assert [default_of(f"max_{name}") for name in ("fp32_error", "dice_drop", "accuracy_drop", "aji_drop",
                                                  "miou_drop")] == [
        limits.fp32_rel_error, limits.dice_drop, limits.accuracy_drop, limits.aji_drop, limits.miou_drop]


def test_default_options_build_the_default_config() -> None:
    assert export_config({name: default_of(name) for name in OPTIONS}) == ExportConfig()
    assert export_config({name: param.default for name, param in _options("export").items()}) == ExportConfig()


def test_options_land_in_their_fields() -> None:
    config = export_config({"batch": "2,4,8", "field_size": "none", "calib_method": "entropy",
                            "int8_exclude": ["se,heads", "se"], "max_dice_drop": 0.5, "workspace": 2.0,
                            "precision": ["int8"]})
    assert (config.batch.min, config.batch.opt, config.batch.max, config.batch.field) == (2, 4, 8, None)
    assert config.int8 == Int8Options(calib_method="entropy", exclude_rules=("se", "heads"))
    assert config.limits == Limits(dice_drop=0.5)
    assert (config.workspace_gib, config.precisions) == (2.0, ("fp32", "int8"))


def test_hep2edge_yaml_keys_are_the_option_names() -> None:
    options = {"export": set(_options("export")), "build-engine": set(_options("build-engine"))}
    assert unknown_defaults({"export": dict.fromkeys(OPTIONS), "build-engine": dict.fromkeys(ENGINE_OPTIONS)},
                            options) == []
    assert unknown_defaults({"export": {"calib_image": 4}}, options) == [
        "'export.calib_image' is not an option of export (did you mean 'calib_images'?)"]
