"""FP16 in the graph through NVIDIA ModelOpt AutoCast, inputs and outputs kept float32.

A strongly typed TensorRT network then runs the fp16 layers in fp16 without any builder flag
(the only route on TensorRT 11, the recommended one on 10.12+).
"""

from __future__ import annotations

import time

import onnx

from hep2edge.export.library_log import captured
from hep2edge.export.precisions import ConversionInputs, Converted
from hep2edge.export.tensorrt_probe import hide_stub_only_tensorrt


def convert_fp16(inputs: ConversionInputs) -> Converted:
    """model.onnx -> fp16 graph with float32 I/O (keep_io_types) and the fp32 file's opset or newer."""
    hide_stub_only_tensorrt()
    start = time.perf_counter()
    with captured(inputs.log_path):
        from modelopt.onnx.autocast import convert_to_mixed_precision

        proto = convert_to_mixed_precision(
            onnx_path=str(inputs.fp32_path),
            low_precision_type="fp16",
            keep_io_types=True,
            providers=["cpu"],
        )
    fp16 = sum(1 for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    notes = {
        "tool": "modelopt.onnx.autocast",
        "fp16_initializers": fp16,
        "initializers": len(proto.graph.initializer),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return Converted(proto, notes)
