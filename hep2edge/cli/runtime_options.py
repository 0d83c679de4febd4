"""The options `analyze`, `watch` and `camera` share, declared once (flag, type, help) with the library's defaults.

A command takes them with `@shared_options(*GROUPS)`: they are appended to its signature, which Typer reads, and
reach it as keyword arguments. Defaults come from the run's config dataclasses, so the CLI cannot disagree
with the library; a command without a group (camera reads no files) gets that group's defaults via `defaults`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

import typer

from hep2edge.runtime.backends import BACKENDS
from hep2edge.runtime.settings import (
    CELL_KERNELS,
    CELL_MODES,
    INFERENCE_MODES,
    MASK_STITCHERS,
    PREPROCESS_MODES,
    SPECIMEN_METHODS,
    PipelineConfig,
    RunConfig,
    SpecimenConfig,
    StageConfig,
)

Command = TypeVar("Command", bound=Callable[..., Any])


def default_of(cls: type, name: str) -> Any:
    """The default of dataclass field `name` of `cls` (the one place a run setting's default lives)."""
    for item in fields(cls):
        if item.name == name:
            return item.default_factory() if item.default is MISSING else item.default  # type: ignore[misc,operator]
    raise KeyError(f"{cls.__name__} has no field {name}")


def _modes(names: tuple[str, ...]) -> str:
    return " | ".join(names)


MB = 1 << 20
MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (Path, typer.Option(None, "--model", "-m", help="Engine, ONNX, checkpoint or export folder "
                                 "(default: the newest runs/export/<n>).")),
    "backend": (str, typer.Option("auto", "--backend", help=_modes(("auto", *BACKENDS.names())) + ".")),
    "device": (str, typer.Option(default_of(RunConfig, "device"), "--device",
                                 help="auto | cpu | cuda (| gpu | npu: Intel, OpenVINO).")),
    "channel": (str, typer.Option(None, "--channel", help="Colour -> gray policy (luminance, green, red, blue, "
                                  "max); default: the model contract's.")),
    "preprocess": (str, typer.Option(default_of(RunConfig, "preprocess"), "--preprocess", help=_modes(
        PREPROCESS_MODES) + " (cuda: TensorRT + pycuda, or a checkpoint on a GPU: tiles cut and masks thresholded "
        "there).")),
    "inference": (str, typer.Option(default_of(RunConfig, "inference"), "--inference", help=_modes(INFERENCE_MODES)
                                    + ": overlapping tiles, or the whole field in one pass (tiles pooled from it; "
                                    "fields smaller than a tile run in tiles).")),
    "cuda_graph": (bool, typer.Option(default_of(RunConfig, "cuda_graph"), "--cuda-graph",
                                      help="TensorRT, torch on CUDA: replay CUDA graphs.")),
    "torch_precision": (str, typer.Option(default_of(RunConfig, "torch_precision"), "--torch-precision",
                                          help="Checkpoint (torch backend): fp32 | fp16.")),
    "channels_last": (bool, typer.Option(default_of(RunConfig, "channels_last"), "--channels-last",
                                         help="Checkpoint (torch backend): NHWC memory format.")),
    "precision_hint": (str, typer.Option(default_of(RunConfig, "inference_precision"), "--precision-hint",
                                         help="OpenVINO: auto | f32 | bf16, the precision of layers the file does "
                                         "not quantize (auto: bf16 where the CPU computes it natively).")),
}
OUTPUT_OPTIONS: dict[str, tuple[Any, Any]] = {
    "out": (Path, typer.Option(None, "--out", "-o", help="RESULTS folder.")),
    "overlay": (bool, typer.Option(default_of(RunConfig, "overlay"), "--overlay",
                                   help="Also write <stem>_overlay.png (cell or mask contours + verdict).")),
    "cells": (str, typer.Option(default_of(StageConfig, "cells"), "--cells", help=_modes(CELL_MODES) + ": per-cell "
                                "analysis (cells in the result JSON): from the model's distance head (auto: where it "
                                "has one), connected components of the mask (touching cells stay merged), or off.")),
    "cell_kernels": (str, typer.Option(default_of(StageConfig, "cell_kernels"), "--cell-kernels",
                                       help=_modes(CELL_KERNELS) + ": who computes the cells: numba (compiled, "
                                       "~4x faster; the `fast` extra), numpy (the reference); auto: numba where "
                                       "installed.")),
    "instance_labels": (bool, typer.Option(default_of(RunConfig, "instance_labels"), "--instance-labels",
                                           help="Also write <stem>_instances.png (16-bit cell ids).")),
    "stitch": (str, typer.Option(default_of(StageConfig, "stitch"), "--stitch",
                                 help=f"Tile masks -> image mask: {_modes(MASK_STITCHERS)}.")),
    "tile_overlap": (int, typer.Option(default_of(StageConfig, "tile_overlap"), "--tile-overlap", min=0,
                                       help="Least overlap of neighbouring tiles, px (0: the fewest tiles). More "
                                       "overlap costs tiles and gives cells found near tile edges more context.")),
    "stats": (bool, typer.Option(False, "--stats", help="Print p50/p95/p99 per stage and end to end at the end.")),
}
PIPELINE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "readers": (int, typer.Option(default_of(PipelineConfig, "readers"), "--readers", min=1,
                                  help="Reader/decoder threads.")),
    "writers": (int, typer.Option(default_of(PipelineConfig, "writers"), "--writers", min=1,
                                  help="Writer threads (stitch, cells, result files, journal).")),
    "queue": (int, typer.Option(default_of(PipelineConfig, "queue_size"), "--queue", min=1,
                                help="Frames waiting between stages (bounds memory).")),
    "max_batch": (int, typer.Option(default_of(PipelineConfig, "max_batch"), "--max-batch", min=1,
                                    help="Most tiles per inference call (filled across images).")),
}
FILE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "retry_failed": (bool, typer.Option(default_of(RunConfig, "retry_failed"), "--retry-failed",
                                        help="Queue inputs that failed in an earlier run again.")),
    "specimen_pattern": (str, typer.Option(default_of(SpecimenConfig, "pattern"), "--specimen-pattern",
                                           help="Regex on the file stem; group 1 is the specimen id.")),
    "specimen_images": (int, typer.Option(default_of(SpecimenConfig, "images"), "--specimen-images", min=1,
                                          help="Images that complete a specimen.")),
    "specimen_method": (str, typer.Option(default_of(SpecimenConfig, "method"), "--specimen-method",
                                          help=_modes(SPECIMEN_METHODS) + ": images vote, mean probabilities, or "
                                          "the pattern most of the specimen's cells carry.")),
    "max_file_mb": (int, typer.Option(default_of(StageConfig, "max_file_bytes") // MB, "--max-file-mb", min=1,
                                      help="Larger files fail as absurdly large.")),
    "max_inflight_mb": (int, typer.Option(default_of(StageConfig, "max_inflight_bytes") // MB, "--max-inflight-mb",
                                          min=1, help="Memory for images between reading and writing (decodes wait "
                                          "for room; one larger image still runs alone).")),
}
GROUPS = (MODEL_OPTIONS, OUTPUT_OPTIONS, PIPELINE_OPTIONS, FILE_OPTIONS)


def shared_options(*groups: dict[str, tuple[Any, Any]]) -> Callable[[Command], Command]:
    """Append the options of `groups` to a command's signature as keyword-only parameters (after its own)."""
    def wrap(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
                 for group in groups for name, (annotation, option) in group.items()]
        command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        return command

    return wrap


def defaults(*groups: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """The default value of every option of `groups` (for a command that does not offer them)."""
    return {name: option.default for group in groups for name, (_, option) in group.items()}
