"""The fp32 ONNX file: export, ONNX checker + shape inference, optional onnxslim, atomic save.

Simplification is kept only when the simplified graph's outputs match the exported one's under
ONNX Runtime on real tiles; otherwise the exported graph is kept and the reason recorded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hep2edge.atomic import atomic_write_bytes
from hep2edge.contract import INPUT_NAME, ModelContract
from hep2edge.errors import ContractError
from hep2edge.export.onnx_contract import attach_contract
from hep2edge.export.onnx_export import export_fp32_onnx, graph_contract
from hep2edge.train.model import MultiTaskUnet

SIMPLIFY_ATOL = 1e-5


@dataclass(frozen=True)
class Fp32Export:
    """The checked fp32 graph and how it was produced."""

    proto: onnx.ModelProto
    simplified: bool
    note: str


def check_graph(proto: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """ONNX checker + strict shape inference; ContractError naming `what` if either fails."""
    try:
        onnx.checker.check_model(proto)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ContractError(f"{what}: fails the ONNX checker / shape inference ({first})") from exc


def run_onnx(proto_or_path: onnx.ModelProto | Path, images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """Outputs of a graph under ONNX Runtime CPU (Q/DQ kept as written), `batch` tiles at a time, by name."""
    import onnxruntime as ort

    source = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Run Q/DQ graphs as written (fake quantization), the semantics TensorRT builds from. ORT's own CPU
    # int8 fusions changed an fp16-high-precision EfficientNet-b0 graph's mask output by 0.24 (vs 0.037).
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(images), batch):
        feed = {INPUT_NAME: np.ascontiguousarray(images[start : start + batch], dtype=np.float32)}
        for name, value in zip(names, session.run(names, feed)):
            chunks[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _max_abs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def simplify(proto: onnx.ModelProto, sample: np.ndarray) -> tuple[onnx.ModelProto, bool, str]:
    """onnxslim's graph if its outputs match `proto`'s within SIMPLIFY_ATOL on `sample`, else `proto`."""
    import onnxslim

    candidate = onnx.ModelProto()
    candidate.CopyFrom(proto)  # onnxslim edits the graph it is given: keep `proto` as exported
    try:
        slim = onnxslim.slim(candidate)
    except Exception as exc:  # onnxslim can fail on any op it does not know
        return proto, False, f"onnxslim failed ({exc.__class__.__name__}); exported graph kept"
    if not isinstance(slim, onnx.ModelProto):
        return proto, False, "onnxslim returned no model; exported graph kept"
    diff = _max_abs(run_onnx(proto, sample), run_onnx(slim, sample))
    if diff > SIMPLIFY_ATOL:
        return proto, False, f"onnxslim changed outputs by {diff:.2e} > {SIMPLIFY_ATOL:g}; exported graph kept"
    nodes = (len(proto.graph.node), len(slim.graph.node))
    return slim, True, f"onnxslim: {nodes[0]} -> {nodes[1]} nodes, outputs within {diff:.1e}"


def export_checked_fp32(
    model: MultiTaskUnet, contract: ModelContract, sample: np.ndarray, opset: int, do_simplify: bool
) -> Fp32Export:
    """Export in a private temp folder, check, simplify if outputs still match, attach the fp32 contract."""
    with tempfile.TemporaryDirectory(prefix="hep2edge-export-") as tmp:
        raw_path = Path(tmp) / "model.raw.onnx"
        export_fp32_onnx(model, contract, raw_path, opset=opset)
        proto = onnx.load(str(raw_path))
    check_graph(proto, "exported fp32 graph")
    simplified, note = False, "simplification off"
    if do_simplify:
        proto, simplified, note = simplify(proto, sample)
        check_graph(proto, "simplified fp32 graph")
    attach_contract(proto, graph_contract(contract, model))
    return Fp32Export(proto, simplified, note)


def save_model_atomic(proto: onnx.ModelProto, path: Path) -> None:
    """Write an ONNX file under a temporary name in the same folder, fsync, then rename it into place.

    hep2edge.atomic gives the file the mode a plain open() would (mkstemp's 0600 would hide the model from
    the service account that runs it). Models here are far below protobuf's 2 GiB limit.
    """
    atomic_write_bytes(Path(path), proto.SerializeToString())
