"""The options of `hep2edge export` and `build-engine`, declared once: flag, type, help and the config field they set.

The CLI (hep2edge.cli.export_options) offers one option per entry, defaulted from its ExportConfig field;
`export_config` turns the option values back into an ExportConfig through the same entries. Light: no numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from hep2edge.export.config import (
    BatchProfile,
    ExportConfig,
    parse_batch,
    parse_field_size,
    parse_names,
    parse_precisions,
)


def _keep(value: Any) -> Any:
    return value


def _batch_text(profile: BatchProfile) -> str:
    return f"{profile.min},{profile.opt},{profile.max}"


def _field_text(field_size: tuple[int, int] | None) -> str:
    return "none" if field_size is None else f"{field_size[0]}x{field_size[1]}"


def _parse_batch(text: str | None) -> BatchProfile:
    return parse_batch(text, _field_text(BatchProfile().field))


@dataclass(frozen=True)
class ExportOption:
    """One option: flag, CLI type, help, the ExportConfig field (dotted) it sets and how its value becomes that."""

    flag: str
    kind: Any
    help: str
    field: str
    parse: Callable[[Any], Any] = _keep
    as_text: Callable[[Any], Any] | None = None  # the field's default as the CLI shows it (text options)


def _field_default(path: str) -> Any:
    """The default of the dotted ExportConfig field `path` (`int8.calib_images`)."""
    value: Any = ExportConfig
    for name in path.split("."):
        if isinstance(value, type):
            item = next(f for f in fields(value) if f.name == name)
            value = item.default_factory() if item.default is MISSING else item.default  # type: ignore[misc,operator]
        else:
            value = getattr(value, name)
    return value


def default_of(name: str) -> Any:
    """The CLI default of option `name`: its field's default, as text where the CLI takes text."""
    option = OPTIONS[name]
    if option.kind == list[str]:  # repeatable: nothing given is the field's default
        return None
    default = _field_default(option.field)
    return option.as_text(default) if option.as_text else default


OPTIONS: dict[str, ExportOption] = {
    "out": ExportOption("--out", Path, "Output folder (default: the next runs/export/<n>).", "out"),
    "precision": ExportOption("--precision", list[str], "fp32|fp16|int8, repeatable or comma-separated (fp32 is "
                              "always written).", "precisions", parse_precisions),
    "calib_data": ExportOption("--calib-data", Path, "INT8 calibration dataset (default: the checkpoint's training "
                               "patients).", "calib_data"),
    "calib_images": ExportOption("--calib-images", int, "Number of INT8 calibration tiles, drawn from that many "
                                 "training images where there are enough.", "int8.calib_images"),
    "calib_method": ExportOption("--calib-method", str, "INT8 calibration: max|entropy.", "int8.calib_method"),
    "int8_high_precision": ExportOption("--int8-high-precision", str, "dtype of the INT8 graph's non-quantized "
                                        "layers: fp16 (TensorRT target) or fp32 (faster on CPU).",
                                        "int8.high_precision"),
    "int8_exclude": ExportOption("--int8-exclude", list[str], "Keep nodes out of INT8 by rule: depthwise, se, "
                                 "sigmoid-mul, heads (repeatable).", "int8.exclude_rules", parse_names),
    "int8_exclude_ops": ExportOption("--int8-exclude-ops", list[str], "ONNX op types kept out of INT8.",
                                     "int8.exclude_op_types", parse_names),
    "int8_exclude_nodes": ExportOption("--int8-exclude-nodes", list[str], "Node-name regexes kept out of INT8.",
                                       "int8.exclude_nodes", parse_names),
    "val_data": ExportOption("--val-data", Path, "Held-out dataset for verification (default: the checkpoint's "
                             "validation patients).", "val_data"),
    "val_images": ExportOption("--val-images", int, "Held-out images to verify on (all their tiles).", "val_images"),
    "batch": ExportOption("--batch", str, "TensorRT profile batch sizes MIN,OPT,MAX.", "batch", _parse_batch,
                          _batch_text),
    "field_size": ExportOption("--field-size", str, "Largest field (HxW) the TensorRT whole-field profile takes "
                               "(--inference field), or none for tile profiles only.", "batch.field",
                               parse_field_size, _field_text),
    "engine": ExportOption("--engine", bool, "Also build TensorRT engines (needs TensorRT here).", "engine"),
    "workspace": ExportOption("--workspace", float, "TensorRT workspace limit in GiB.", "workspace_gib"),
    "opset": ExportOption("--opset", int, "ONNX opset (17 or newer).", "opset"),
    "simplify": ExportOption("--simplify/--no-simplify", bool, "Simplify with onnxslim when outputs still match.",
                             "simplify"),
    "field_check": ExportOption("--field-check/--no-field-check", bool, "Score the fp32 file in whole-field mode "
                                "(--inference field) against its tiles on the held-out images.", "field_check"),
    "max_dice_drop": ExportOption("--max-dice-drop", float, "Fail when a precision loses more Dice.",
                                  "limits.dice_drop"),
    "max_accuracy_drop": ExportOption("--max-accuracy-drop", float, "Fail when a precision loses more pattern or "
                                      "intensity accuracy.", "limits.accuracy_drop"),
    "max_fp32_error": ExportOption("--max-fp32-error", float, "Fail when fp32 ONNX differs from PyTorch by more "
                                   "(relative).", "limits.fp32_rel_error"),
    "max_aji_drop": ExportOption("--max-aji-drop", float, "Fail when a precision loses more per-cell AJI (models "
                                 "with a distance or pattern-map head).", "limits.aji_drop"),
    "max_miou_drop": ExportOption("--max-miou-drop", float, "Fail when a precision loses more pattern-map mIoU "
                                  "(models with a pattern-map head).", "limits.miou_drop"),
}
ENGINE_OPTIONS = ("batch", "field_size", "workspace")  # what `build-engine` shares with `export`


def _set(config: Any, path: str, value: Any) -> Any:
    """A copy of dataclass `config` with dotted field `path` set to `value` (checked by each __post_init__)."""
    name, _, rest = path.partition(".")
    if rest:
        inner = getattr(config, name)
        assert is_dataclass(inner), path
        value = _set(inner, rest, value)
    return replace(config, **{name: value})


def export_config(options: Mapping[str, Any], **fixed: Any) -> ExportConfig:
    """The ExportConfig of option values (by option name; absent ones keep their default), `fixed` fields first."""
    config = ExportConfig(**fixed)
    for name, option in OPTIONS.items():  # batch before field_size: the profile, then its field
        if name in options:
            config = _set(config, option.field, option.parse(options[name]))
    return config
