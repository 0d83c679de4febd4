"""Keep the QuantizeLinear nodes of an fp16-high-precision INT8 graph in fp32 (one rewrite after ModelOpt).

ONNX Runtime's CPU QuantizeLinear truncates fp16 inputs toward zero instead of rounding to nearest even
(microsoft/onnxruntime#18576, #22741; fixed by PR #32452: 1.24.4 truncates, 1.32.0 rounds). On the fp16
graph ModelOpt writes, every quantized tensor then carries up to one extra LSB of error: a mobilenet_v2
U-Net's pattern accuracy fell from 0.74 to 0.41 under verification, although TensorRT, documented to
round with ties to even, computes that graph as specified. So the quantizers are moved to fp32, as
ModelOpt's own PyTorch exporter does by default for strongly typed TensorRT
(`trt_high_precision_dtype="Float"`, which casts around Q and DQ both); every runtime computes that alike:

- weights: quantized here (fp32 arithmetic, round half to even) and stored as int8 initializers with
  only their DequantizeLinear (TensorRT's "pre-quantized weights"); no runtime QuantizeLinear left;
- activations: QuantizeLinear takes fp32 (a Cast from the fp16 tensor, or the fp32 graph input directly)
  with an fp32 copy of its scale; DequantizeLinear keeps the fp16 scale and feeds the fp16 layers.

The numbers are those of the fp16 graph: scales are the same fp16 values, the quantized tensor is the
same fp16 tensor (for the graph input: the fp32 image itself, not its fp16 cast); only the rounding is
done the way the ONNX specification (and TensorRT) define it.
Details and figures: export/int8/STUDY.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Q_OP = "QuantizeLinear"


@dataclass(frozen=True)
class QuantizeRewrite:
    """What `quantize_in_fp32` changed: weights stored as int8, activation quantizers moved to fp32."""

    int8_weights: int
    fp32_quantizers: int


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def quantize_weight(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """int8 weight as ONNX QuantizeLinear defines it: saturate(round_half_even(w / scale) + zp), fp32 math."""
    shape = [1] * weight.ndim
    if scale.size > 1:
        shape[axis] = -1
    ratio = weight.astype(np.float32) / scale.astype(np.float32).reshape(shape)
    quantized = np.rint(ratio) + zero_point.astype(np.float32).reshape(shape)
    return np.clip(quantized, -128, 127).astype(np.int8)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _is_fp16(initializers: dict[str, TensorProto], name: str) -> bool:
    return name in initializers and initializers[name].data_type == TensorProto.FLOAT16


def _store_int8_weight(graph: onnx.GraphProto, node: onnx.NodeProto, inits: dict[str, TensorProto]) -> None:
    """Q(w) -> DQ becomes int8 initializer -> DQ; the fp16 weight and the Q node's own scale go if unused."""
    weight, scale = (numpy_helper.to_array(inits[name]) for name in node.input[:2])
    zero_point = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else np.zeros(1, np.int8)
    name = f"{node.input[0]}_int8"
    graph.initializer.append(numpy_helper.from_array(quantize_weight(weight, scale, zero_point, _axis(node)), name))
    for consumer in _consumers(graph, node.output[0]):
        consumer.input[0] = name
    graph.node.remove(node)


def _fp32_source(graph: onnx.GraphProto, tensor: str) -> tuple[str, bool]:
    """An fp32 tensor holding `tensor`'s values and whether a Cast must make it: the fp32 graph input that
    a Cast turned into `tensor`, a Cast already added for another quantizer, else a new Cast."""
    producers = _producers(graph)
    producer = producers.get(tensor)
    if producer is not None and producer.op_type == "Cast" and _cast_from_graph_fp32_input(graph, producer):
        return producer.input[0], False
    name = f"{tensor}_fp32_for_q"
    return name, name not in producers


def _cast_from_graph_fp32_input(graph: onnx.GraphProto, cast: onnx.NodeProto) -> bool:
    inputs = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    return inputs.get(cast.input[0]) == TensorProto.FLOAT


def _fp32_scale(graph: onnx.GraphProto, inits: dict[str, TensorProto], scale: str) -> str:
    name = f"{scale}_fp32"
    if name not in inits:
        value = numpy_helper.to_array(inits[scale]).astype(np.float32)
        inits[name] = numpy_helper.from_array(value, name)
        graph.initializer.append(inits[name])
    return name


def _quantize_activation_in_fp32(graph: onnx.GraphProto, node: onnx.NodeProto, inits: dict[str, TensorProto]) -> None:
    """Q(x16, s16) becomes Q(Cast(x16 -> fp32), s32), or Q(x32, s32) when x16 is a cast of an fp32 graph input."""
    source, needs_cast = _fp32_source(graph, node.input[0])
    if needs_cast:
        cast = helper.make_node("Cast", [node.input[0]], [source], name=f"{node.name}_to_fp32", to=TensorProto.FLOAT)
        graph.node.insert(list(graph.node).index(node), cast)
    node.input[0] = source
    node.input[1] = _fp32_scale(graph, inits, node.input[1])


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove Cast nodes whose output nobody reads (repeat until stable), then unread initializers and the
    value_info of tensors no node makes any more."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not set(n.output) & used]
        for node in dead:
            graph.node.remove(node)
        if not dead:
            break
    used = {name for node in graph.node for name in node.input} | outputs
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    made = {out for node in graph.node for out in node.output}
    infos = [v for v in graph.value_info if v.name in made]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def quantize_in_fp32(model: onnx.ModelProto) -> QuantizeRewrite:
    """Rewrite every QuantizeLinear with an fp16 scale in place (see the module docstring); fp32 graphs untouched."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    weights = activations = 0
    for node in [n for n in graph.node if n.op_type == Q_OP and _is_fp16(inits, n.input[1])]:
        if node.input[0] in inits:
            _store_int8_weight(graph, node, inits)
            weights += 1
        else:
            _quantize_activation_in_fp32(graph, node, inits)
            activations += 1
    _drop_unused(graph)
    return QuantizeRewrite(weights, activations)


def fp16_quantizers(model: onnx.ModelProto) -> list[str]:
    """Names of QuantizeLinear nodes that would quantize an fp16 tensor (what `quantize_in_fp32` removes)."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == Q_OP and _is_fp16(inits, n.input[1])]
