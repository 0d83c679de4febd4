"""Which quantized nodes move the outputs most: each one quantized alone, on the calibration tiles.

A node's sensitivity is the mean absolute change of the graph's outputs (mask, pattern and intensity
probabilities) when only that node reads Q/DQ inputs and every other node reads its inputs unquantized.
The ranking is made on a Q/DQ graph with fp32 high precision (ONNX Runtime CPU computes it as written).
`convert_int8` keeps the most sensitive `SENSITIVE_SHARE` of the quantized nodes in high precision: on a
mobilenet_v2 U-Net those are the first, thin, high-resolution encoder layers and the layer reading the
8-bit image (figures in export/int8/STUDY.md).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

SENSITIVE_SHARE = 0.10  # of the quantized nodes, at least one
# One graph run per ranked node, so the ranking is bounded: only the earliest quantized nodes (graph order)
# are candidates, since the sensitive ones are the first thin, high-resolution layers (STUDY.md), and
# the tiles are a fixed pixel budget (16 tiles of 128 px; 4 of 384 px). efficientnet-b4 at 384 px has about
# 300 quantized nodes: ranking them all took over 20 minutes on 2 CPU cores.
CANDIDATE_SHARE = 0.25
MAX_CANDIDATES = 48
SENSITIVITY_PIXELS = 16 * 128 * 128
MIN_SENSITIVITY_TILES = 4

Wiring = dict[str, list[tuple[int, str]]]


def quantized_inputs(model: onnx.ModelProto) -> Wiring:
    """{node: [(input index, tensor the Q/DQ pair quantizes)]} for every node reading a Q -> DQ pair."""
    producers = {out: node for node in model.graph.node for out in node.output}
    wiring: Wiring = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                wiring.setdefault(node.name, []).append((index, q.input[0]))
    return wiring


def quantized_only(model: onnx.ModelProto, wiring: Wiring, keep: str | None) -> onnx.ModelProto:
    """A copy where only node `keep` (None: no node) reads its Q/DQ inputs; the others read the float tensor."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.name in wiring and node.name != keep:
            for index, source in wiring[node.name]:
                node.input[index] = source
    return copy


def _mean_change(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> float:
    return float(sum(np.abs(outputs[name] - reference[name]).mean() for name in reference))


def candidates(wiring: Wiring, keep: int) -> list[str]:
    """The earliest quantized nodes in graph order: CANDIDATE_SHARE of them or twice `keep`, at most MAX_CANDIDATES."""
    names = list(wiring)
    return names[: min(MAX_CANDIDATES, max(2 * keep, math.ceil(CANDIDATE_SHARE * len(names))))]


def sensitivity_tiles(tiles: np.ndarray) -> np.ndarray:
    """The first tiles of `tiles` (N, C, t, t) within SENSITIVITY_PIXELS, at least MIN_SENSITIVITY_TILES."""
    count = max(MIN_SENSITIVITY_TILES, SENSITIVITY_PIXELS // (tiles.shape[-1] * tiles.shape[-2]))
    return tiles[:count]


def rank_nodes(model: onnx.ModelProto, tiles: np.ndarray, names: list[str] | None = None) -> list[tuple[str, float]]:
    """(node, mean output change with only that node quantized) for `names` (default all), most sensitive first."""
    from hep2edge.export.onnx_graph import run_onnx

    wiring = quantized_inputs(model)
    reference = run_onnx(quantized_only(model, wiring, None), tiles)
    scores = [(name, _mean_change(reference, run_onnx(quantized_only(model, wiring, name), tiles)))
              for name in (names if names is not None else list(wiring))]
    return sorted(scores, key=lambda item: -item[1])


def most_sensitive(model: onnx.ModelProto, tiles: np.ndarray, share: float = SENSITIVE_SHARE) -> list[str]:
    """Names of the ceil(share x quantized nodes) nodes, among the early candidates, that move the outputs most."""
    wiring = quantized_inputs(model)
    keep = max(1, math.ceil(share * len(wiring)))
    ranking = rank_nodes(model, sensitivity_tiles(tiles), candidates(wiring, keep))
    return [name for name, _ in ranking[:keep]]
