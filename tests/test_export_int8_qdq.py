"""The INT8 graph's QuantizeLinear nodes run in fp32 and the most sensitive nodes stay out of INT8.

Fast tests on hand-built graphs shaped like ModelOpt's output (no ModelOpt run), one slow test on its real
output. ONNX Runtime < 1.32 truncates fp16 QuantizeLinear inputs toward zero (microsoft/onnxruntime#18576);
the converter must not leave any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx
from onnx import TensorProto, helper, numpy_helper

from hep2edge.contract import INPUT_NAME
from hep2edge.export.config import Int8Options
from hep2edge.export.int8 import quantize
from hep2edge.export.int8.qdq import QuantizeRewrite, fp16_quantizers, quantize_in_fp32, quantize_weight
from hep2edge.export.int8.sensitivity import most_sensitive, quantized_inputs
from hep2edge.export.onnx_graph import run_onnx
from hep2edge.export.precisions import ConversionInputs

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(4, 1, 1, 1)).astype(np.float16)
W2 = RNG.normal(size=(1, 4, 1, 1)).astype(np.float16)
TILES = RNG.uniform(0, 1, size=(6, 1, 5, 5)).astype(np.float32)


def _qdq(x: str, tag: str, scale: np.ndarray, dtype: type, axis: int | None = None) -> tuple[list[Any], list[Any]]:
    """Q -> DQ of tensor `x` with separate Q and DQ scale initializers, as ModelOpt writes them."""
    kwargs: dict[str, Any] = {} if axis is None else {"axis": axis}
    zero = np.zeros(scale.shape, np.int8)
    inits = [numpy_helper.from_array(scale.astype(dtype), f"{tag}_s1"), numpy_helper.from_array(zero, f"{tag}_z1"),
             numpy_helper.from_array(scale.astype(dtype), f"{tag}_s2"), numpy_helper.from_array(zero, f"{tag}_z2")]
    nodes = [helper.make_node("QuantizeLinear", [x, f"{tag}_s1", f"{tag}_z1"], [f"{tag}_q"], name=f"{tag}_Q", **kwargs),
             helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_s2", f"{tag}_z2"], [f"{tag}_dq"],
                              name=f"{tag}_DQ", **kwargs)]
    return nodes, inits


def modelopt_like(dtype: type, act_scale: float = 1 / 127) -> onnx.ModelProto:
    """image -> Q/DQ -> Conv(Q/DQ weights) -> Relu -> Q/DQ -> Conv(Q/DQ weights) -> mask, in `dtype`."""
    fp16 = dtype == np.float16
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    nodes: list[Any] = [helper.make_node("Cast", [INPUT_NAME], ["x16"], to=elem, name="in_cast")] if fp16 else []
    inits: list[Any] = [numpy_helper.from_array(w.astype(dtype), name) for w, name in ((W1, "w1"), (W2, "w2"))]
    w_scale = [np.abs(w.astype(np.float32)).max(axis=(1, 2, 3)) / 127 for w in (W1, W2)]
    parts = [_qdq("x16" if fp16 else INPUT_NAME, "x", np.array(1 / 127, np.float32), dtype),
             _qdq("w1", "w1", w_scale[0], dtype, axis=0), _qdq("r1", "r1", np.array(act_scale, np.float32), dtype),
             _qdq("w2", "w2", w_scale[1], dtype, axis=0)]
    for part_nodes, part_inits in parts[:2]:
        nodes += part_nodes
        inits += part_inits
    nodes += [helper.make_node("Conv", ["x_dq", "w1_dq"], ["c1"], name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    for part_nodes, part_inits in parts[2:]:
        nodes += part_nodes
        inits += part_inits
    last = "mask16" if fp16 else "mask"
    nodes.append(helper.make_node("Conv", ["r1_dq", "w2_dq"], [last], name="conv2"))
    if fp16:
        nodes.append(helper.make_node("Cast", ["mask16"], ["mask"], to=TensorProto.FLOAT, name="out_cast"))
    graph = helper.make_graph(
        nodes, "modelopt_like",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, 5, 5])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, 5, 5])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def test_quantize_weight_rounds_half_to_even_and_saturates() -> None:
    weight = np.array([[0.5, 1.5, 2.5, -0.5], [-1.5, 0.6, 300.0, -300.0]], np.float16)
    scale = np.array([1.0, 1.0], np.float16)
    q = quantize_weight(weight, scale, np.zeros(2, np.int8), axis=0)
    assert q.dtype == np.int8
    assert q.tolist() == [[0, 2, 2, 0], [-2, 1, 127, -128]]


def test_rewrite_leaves_no_fp16_quantizer_and_matches_fp32_quantization() -> None:
    model = modelopt_like(np.float16)
    assert len(fp16_quantizers(model)) == 4  # what ModelOpt's fp16 high precision writes
    rewrite = quantize_in_fp32(model)
    onnx.checker.check_model(model)
    assert (rewrite.int8_weights, rewrite.fp32_quantizers) == (2, 2)
    assert fp16_quantizers(model) == []
    inits = {t.name: t for t in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert [q.input[0] for q in quantizers][0] == INPUT_NAME  # the fp32 image, not its fp16 cast
    assert all(inits[q.input[1]].data_type == TensorProto.FLOAT for q in quantizers)
    assert {inits[n].data_type for n in ("w1_int8", "w2_int8")} == {TensorProto.INT8}
    assert "w1" not in inits and "x16" not in {o for n in model.graph.node for o in n.output}
    # Same scales in fp32 high precision: ONNX Runtime rounds those as the ONNX spec (and TensorRT) do.
    reference = run_onnx(modelopt_like(np.float32), TILES)["mask"]
    assert np.abs(run_onnx(model, TILES)["mask"] - reference).max() < 2e-3  # truncation: ~3e-2


def test_fp32_high_precision_graph_is_left_as_it_is() -> None:
    model = modelopt_like(np.float32)
    before = model.SerializeToString()
    assert quantize_in_fp32(model) == QuantizeRewrite(0, 0)
    assert model.SerializeToString() == before


def test_sensitivity_ranks_the_badly_scaled_quantizer_first() -> None:
    model = modelopt_like(np.float32, act_scale=0.5)  # conv2's input quantized with a far too coarse step
    assert set(quantized_inputs(model)) == {"conv1", "conv2"}
    assert most_sensitive(model, TILES, share=0.5) == ["conv2"]
    assert most_sensitive(model, TILES, share=0.01) == ["conv2"]  # at least one node


def test_convert_int8_keeps_sensitive_nodes_out_and_quantizes_in_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converter's flow on ModelOpt-shaped graphs: probe in fp32, exclusions, fp32 quantizers."""
    calls: list[dict[str, Any]] = []

    def fake_quantize(source: Path, target: Path, calibration: np.ndarray, options: Int8Options,
                      exclude: list[str], high_precision: str) -> onnx.ModelProto:
        calls.append({"exclude": list(exclude), "high_precision": high_precision})
        return modelopt_like(np.float16 if high_precision == "fp16" else np.float32, act_scale=0.5)

    monkeypatch.setattr(quantize, "_quantize", fake_quantize)
    fp32_path = tmp_path / "model.onnx"
    onnx.save(modelopt_like(np.float32), str(fp32_path))
    inputs = ConversionInputs(fp32_path, lambda: TILES, Int8Options(), tmp_path / "export.log")
    converted = quantize.convert_int8(inputs)
    assert [c["high_precision"] for c in calls] == ["fp32", "fp16"]
    assert calls[1]["exclude"] == ["^conv2$"]  # ceil(10% of 2 quantized nodes) = the most sensitive one
    assert converted.notes["sensitive_nodes_kept"] == ["conv2"]
    assert converted.notes["calibration_method"] == "max"
    assert fp16_quantizers(converted.proto) == []
    assert converted.notes["fp32_quantizers"] == 2 and converted.notes["int8_weight_initializers"] == 2


@pytest.mark.slow
def test_default_int8_conversion_of_a_real_graph(tiny_onnx: Path, synth_small: Path, tmp_path: Path) -> None:
    """ModelOpt's real fp16 output, rewritten: valid graph, no fp16 quantizer, int8 weights, a tenth kept out."""
    pytest.importorskip("modelopt.onnx")
    from hep2edge.contract import ModelContract
    from hep2edge.export.onnx_graph import check_graph
    from hep2edge.export.tiles import DataSelection, calibration_tiles

    tiles = calibration_tiles(DataSelection(synth_small, None, "test"), ModelContract(tile=64), 4, seed=0)
    converted = quantize.convert_int8(ConversionInputs(tiny_onnx, lambda: tiles, Int8Options(), tmp_path / "log"))
    check_graph(converted.proto, "int8 graph")
    notes = converted.notes
    assert notes["high_precision_dtype"] == "fp16" and fp16_quantizers(converted.proto) == []
    assert notes["int8_weight_initializers"] > 10 and notes["fp32_quantizers"] > 10
    kept = notes["sensitive_nodes_kept"]
    assert 1 <= len(kept) <= notes["quantized_ops"] // 5
    assert not set(kept) & set(quantized_inputs(converted.proto))  # kept nodes read no Q/DQ input
    assert set(kept) <= {n.name for n in converted.proto.graph.node}
    ref, out = run_onnx(tiny_onnx, tiles), run_onnx(converted.proto, tiles)
    assert max(float(np.abs(ref[k] - out[k]).max()) for k in ref) < 0.5


def test_sensitivity_ranking_is_bounded_to_early_nodes_and_few_tiles() -> None:
    """One graph run per candidate: a 300-node encoder must not mean 300 runs on every calibration tile."""
    from hep2edge.export.int8.sensitivity import MAX_CANDIDATES, candidates, sensitivity_tiles

    wiring = {f"n{i}": [(0, f"t{i}")] for i in range(300)}
    chosen = candidates(wiring, keep=30)
    assert chosen == [f"n{i}" for i in range(MAX_CANDIDATES)]
    assert candidates({"a": [], "b": []}, keep=1) == ["a", "b"]
    assert len(sensitivity_tiles(np.zeros((32, 1, 384, 384), np.float32))) == 4
    assert len(sensitivity_tiles(np.zeros((32, 1, 128, 128), np.float32))) == 16
