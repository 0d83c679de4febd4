"""FP16 in the graph through NVIDIA ModelOpt AutoCast, inputs and outputs kept float32.

A strongly typed TensorRT network then runs the fp16 layers in fp16 without any builder flag
(the only route on TensorRT 11, the recommended one on 10.12+).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hep2edge.contract import INPUT_NAME
from hep2edge.export.library_log import captured
from hep2edge.export.precisions import ConversionInputs, Converted
from hep2edge.export.tensorrt.probe import hide_stub_only_tensorrt


def convert_fp16(inputs: ConversionInputs) -> Converted:
    """model.onnx -> fp16 graph with float32 I/O (keep_io_types) and the fp32 file's opset or newer.

    AutoCast keeps in fp32 the nodes whose values leave the fp16 range on a reference run; that run
    uses real training tiles when there are some, else AutoCast's random inputs.
    """
    hide_stub_only_tensorrt()
    start = time.perf_counter()
    tiles = inputs.calibration() if inputs.calibration is not None else None
    with tempfile.TemporaryDirectory(prefix="hep2edge-fp16-") as tmp, captured(inputs.log_path):
        reference_inputs = None
        if tiles is not None:
            reference_inputs = str(Path(tmp) / "reference.npz")
            np.savez(reference_inputs, **{INPUT_NAME: tiles})
        from modelopt.onnx.autocast import convert_to_mixed_precision

        proto = convert_to_mixed_precision(
            onnx_path=str(inputs.fp32_path),
            low_precision_type="fp16",
            keep_io_types=True,
            calibration_data=reference_inputs,
            providers=["cpu"],
        )
    fp16 = sum(1 for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    notes = {
        "tool": "modelopt.onnx.autocast",
        "fp16_initializers": fp16,
        "initializers": len(proto.graph.initializer),
        "range_check_inputs": f"{len(tiles)} training tiles" if tiles is not None else "random (no training tiles)",
        "seconds": round(time.perf_counter() - start, 2),
    }
    return Converted(proto, notes)
