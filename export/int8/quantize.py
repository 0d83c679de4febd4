"""INT8 Q/DQ in the graph through ModelOpt ONNX PTQ, calibrated on real tiles.

Weights are quantized per channel (ModelOpt's ORT-based path always does); Sigmoid and Softmax are not
quantizable op types there, so the probability heads stay in high precision. Named exclusion rules
(`depthwise`, `se`, `sigmoid-mul`, `heads`) keep the nodes EfficientNet is known to be fragile on out
of INT8; on top of them the most output-sensitive tenth of the quantized nodes, ranked on the
calibration tiles (export/int8/sensitivity.py), stays in high precision. `high_precision` decides the
dtype of everything not quantized (fp16 by default: what the strongly typed TensorRT engine should run;
fp32 is faster and closest under ONNX Runtime CPU). With fp16, the QuantizeLinear nodes are rewritten to
quantize in fp32 (export/int8/qdq.py): ONNX Runtime < 1.32 truncates fp16 inputs instead of rounding.
Figures for these choices: export/int8/STUDY.md.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from hep2edge.contract import INPUT_NAME
from hep2edge.errors import ConfigError
from hep2edge.export.config import Int8Options
from hep2edge.export.int8.qdq import quantize_in_fp32
from hep2edge.export.int8.sensitivity import most_sensitive
from hep2edge.export.library_log import captured
from hep2edge.export.precisions import ConversionInputs, Converted
from hep2edge.export.tensorrt.probe import hide_stub_only_tensorrt
from hep2edge.registry import Registry

ExclusionRule = Callable[[onnx.ModelProto], list[str]]
EXCLUSIONS: Registry[ExclusionRule] = Registry("int8 exclusion rule")

SE_NAME = re.compile(r"_se_|\.se\.|/se/|conv_reduce|conv_expand", re.IGNORECASE)


@EXCLUSIONS.register("depthwise")
def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Grouped convolutions (depthwise in MBConv blocks): their per-channel ranges are the fragile part."""
    return [
        n.name for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


@EXCLUSIONS.register("se")
def squeeze_excitation(model: onnx.ModelProto) -> list[str]:
    """Squeeze-excitation reduce/expand convolutions and the Mul that applies their gate."""
    se_convs = {n.name for n in model.graph.node if SE_NAME.search(n.name)}
    producers = {out: n for n in model.graph.node for out in n.output}
    gates = []
    for node in model.graph.node:
        if node.op_type != "Mul":
            continue
        for name in node.input:
            sigmoid = producers.get(name)
            if sigmoid is not None and sigmoid.op_type == "Sigmoid":
                upstream = producers.get(sigmoid.input[0])
                if upstream is not None and upstream.name in se_convs:
                    gates.append(node.name)
    return sorted(se_convs) + gates


@EXCLUSIONS.register("sigmoid-mul")
def sigmoid_gated_muls(model: onnx.ModelProto) -> list[str]:
    """Every Mul fed by a Sigmoid: SiLU/Swish activations and SE gates."""
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    return [
        n.name for n in model.graph.node
        if n.op_type == "Mul" and any(producers.get(i) == "Sigmoid" for i in n.input)
    ]


@EXCLUSIONS.register("heads")
def classifier_heads(model: onnx.ModelProto) -> list[str]:
    """The pattern and intensity heads (Gemm/MatMul after global pooling): a few thousand weights."""
    return [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]


def excluded_nodes(model: onnx.ModelProto, rules: tuple[str, ...], patterns: tuple[str, ...]) -> list[str]:
    """Node-name regexes for ModelOpt: exact names from the named rules plus the user's patterns."""
    names: list[str] = []
    for rule in rules:
        names.extend(EXCLUSIONS.get(rule)(model))
    return sorted({f"^{re.escape(n)}$" for n in names if n}) + list(patterns)


def _count_qdq(model: onnx.ModelProto) -> tuple[int, int]:
    quantize = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    consumers = {i for n in model.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    quantized = sum(1 for n in model.graph.node if n.op_type != "QuantizeLinear" and consumers & set(n.input))
    return quantize, quantized


def _exact(names: list[str]) -> list[str]:
    return [f"^{re.escape(name)}$" for name in names]


def _quantize(source: Path, target: Path, calibration: np.ndarray, options: Int8Options, exclude: list[str],
              high_precision: str) -> onnx.ModelProto:
    """One ModelOpt PTQ run of `source` (inside `captured`), loaded back from `target`."""
    from modelopt.onnx.quantization import quantize

    quantize(
        onnx_path=str(source),
        quantize_mode="int8",
        calibration_data={INPUT_NAME: calibration},
        calibration_method=options.calib_method,
        calibration_eps=["cpu"],
        op_types_to_exclude=list(options.exclude_op_types),
        nodes_to_exclude=list(exclude),  # ModelOpt extends the list it is given
        high_precision_dtype=high_precision,
        output_path=str(target),
        log_level="WARNING",
    )
    return onnx.load(str(target))


def convert_int8(inputs: ConversionInputs) -> Converted:
    """model.onnx -> Q/DQ graph calibrated on `inputs.calibration()` tiles (float32 I/O kept).

    A first fp32-high-precision PTQ run ranks the quantized nodes by output sensitivity; the final run
    keeps the most sensitive ones (and the excluded ones) out of INT8.
    """
    hide_stub_only_tensorrt()
    options = inputs.int8
    if inputs.calibration is None:
        raise ConfigError("int8 needs calibration tiles from the training data; pass --calib-data DATA_DIR")
    calibration = inputs.calibration()
    fp32 = onnx.load(str(inputs.fp32_path))
    exclude = excluded_nodes(fp32, options.exclude_rules, options.exclude_nodes)
    start = time.perf_counter()
    # ModelOpt writes intermediate files next to its input: work on a private copy.
    with tempfile.TemporaryDirectory(prefix="hep2edge-int8-") as tmp:
        source = Path(tmp) / "model.onnx"
        shutil.copyfile(inputs.fp32_path, source)
        with captured(inputs.log_path):
            probe = _quantize(source, Path(tmp) / "probe.onnx", calibration, options, exclude, "fp32")
            sensitive = most_sensitive(probe, calibration)
            proto = _quantize(source, Path(tmp) / "model.int8.onnx", calibration, options,
                              exclude + _exact(sensitive), options.high_precision)
    rewrite = quantize_in_fp32(proto)
    quantize_nodes, quantized_ops = _count_qdq(proto)
    notes = {
        "tool": "modelopt.onnx.quantization",
        "calibration_method": options.calib_method,
        "calibration_tiles": int(calibration.shape[0]),
        "high_precision_dtype": options.high_precision,
        "per_channel_weights": True,
        "excluded_rules": list(options.exclude_rules),
        "excluded_op_types": list(options.exclude_op_types),
        "excluded_nodes": len(exclude),
        "sensitive_nodes_kept": sensitive,
        "quantize_linear_nodes": quantize_nodes,
        "quantized_ops": quantized_ops,
        "int8_weight_initializers": rewrite.int8_weights,
        "fp32_quantizers": rewrite.fp32_quantizers,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return Converted(proto, notes)
