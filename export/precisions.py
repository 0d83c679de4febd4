"""The precision registry: name -> how to make that precision's ONNX file from the fp32 one.

Adding a precision is one `PRECISIONS.add(...)` entry. Converters return a graph without the contract;
the pipeline attaches `contract.with_precision(name)`, checks and saves it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hep2edge.contract import model_file_name
from hep2edge.export.config import Int8Options
from hep2edge.registry import Registry


@dataclass
class ConversionInputs:
    """What a converter may use: the checked fp32 file, calibration tiles on demand, options, a log file."""

    fp32_path: Path
    calibration: Callable[[], np.ndarray] | None  # None: no training tiles could be resolved
    int8: Int8Options
    log_path: Path


@dataclass
class Converted:
    """A converter's graph (no contract yet) and facts worth reporting."""

    proto: onnx.ModelProto
    notes: dict[str, Any] = field(default_factory=dict)


Converter = Callable[[ConversionInputs], Converted]


@dataclass(frozen=True)
class Precision:
    """One precision: its file name, converter (None for fp32, exported straight from PyTorch), and whether
    it needs real training tiles (`required`), uses them when the checkpoint records them (`optional`)."""

    name: str
    filename: str
    convert: Converter | None
    calibration: str = "none"  # none | optional | required
    integer: bool = False  # integer arithmetic (Q/DQ): exposed to AVX2's int8 saturation under OpenVINO


def _fp16(inputs: ConversionInputs) -> Converted:
    from hep2edge.export.fp16 import convert_fp16

    return convert_fp16(inputs)


def _int8(inputs: ConversionInputs) -> Converted:
    from hep2edge.export.int8.quantize import convert_int8

    return convert_int8(inputs)


PRECISIONS: Registry[Precision] = Registry("precision")
PRECISIONS.add("fp32", Precision("fp32", model_file_name("fp32"), None))
PRECISIONS.add("fp16", Precision("fp16", model_file_name("fp16"), _fp16, calibration="optional"))
PRECISIONS.add("int8", Precision("int8", model_file_name("int8"), _int8, calibration="required", integer=True))
