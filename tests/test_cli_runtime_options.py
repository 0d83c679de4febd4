"""The options analyze, watch and camera share are declared once: with every option at its default, the run's
resolved config equals the library's own defaults, and each command offers exactly its groups."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import typer.main

from hep2edge.cli.app import app
from hep2edge.cli.runtime_options import FILE_OPTIONS, GROUPS, MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS, defaults
from hep2edge.runtime.settings import PipelineConfig, RunConfig, SpecimenConfig, StageConfig


def test_default_options_resolve_to_the_library_defaults(tiny_onnx: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from hep2edge.cli.runtime_commands import _config

    monkeypatch.chdir(tmp_path)
    options = {**defaults(*GROUPS), "model": tiny_onnx, "backend": "onnxruntime", "out": tmp_path / "out"}
    config = _config("analyze", options, {})
    assert config.stage == StageConfig(retry_failed=config.stage.retry_failed)
    assert config.pipeline == PipelineConfig() and config.specimens == SpecimenConfig()
    for item in fields(RunConfig):
        if item.name in ("device", "preprocess", "inference", "cuda_graph", "torch_precision", "channels_last",
                         "inference_precision", "overlay", "instance_labels", "retry_failed"):
            assert getattr(config, item.name) == item.default, item.name


def _option_names(command: str) -> set[str]:
    found = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name for p in found.params if p.param_type_name == "option" and p.name}


@pytest.mark.parametrize(("command", "groups"), [
    ("analyze", (MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS, FILE_OPTIONS)),
    ("watch", (MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS, FILE_OPTIONS)),
    ("camera", (MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS)),
])
def test_each_command_offers_its_shared_groups(command: str, groups: tuple[dict[str, object], ...]) -> None:
    shared = {name for group in GROUPS for name in group}
    offered = _option_names(command) & shared
    assert offered == {name for group in groups for name in group}
