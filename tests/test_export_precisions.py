"""fp16 (ModelOpt AutoCast) and int8 (ModelOpt ONNX PTQ) graphs made from the tiny fp32 ONNX file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx")

import onnx

from hep2edge.contract import ModelContract
from hep2edge.export.config import Int8Options
from hep2edge.export.int8.quantize import EXCLUSIONS, excluded_nodes
from hep2edge.export.onnx_graph import run_onnx
from hep2edge.export.precisions import PRECISIONS, ConversionInputs
from hep2edge.export.tiles import DataSelection, calibration_tiles
from hep2edge.export.verify import output_diffs

FLOAT = onnx.TensorProto.FLOAT
FLOAT16 = onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def calib(synth_small: Path) -> np.ndarray:
    """Real tiles from the synthetic dataset (what the pipeline feeds ModelOpt)."""
    return calibration_tiles(DataSelection(synth_small, None, "test"), ModelContract(tile=64), 6, seed=0)


def _inputs(path: Path, tiles: np.ndarray | None, tmp: Path, **int8: object) -> ConversionInputs:
    calibration = None if tiles is None else (lambda: tiles)
    return ConversionInputs(path, calibration, Int8Options(**int8), tmp / "export.log")


def _io_types(model: onnx.ModelProto) -> list[int]:
    return [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]


def test_registry_lists_the_three_precisions() -> None:
    assert PRECISIONS.names() == ["fp16", "fp32", "int8"]
    assert PRECISIONS.get("int8").calibration == "required" and PRECISIONS.get("fp32").convert is None
    assert PRECISIONS.get("fp16").calibration == "optional"
    assert PRECISIONS.get("fp16").filename == "model.fp16.onnx"


def test_calibration_tiles_are_real_normalised_tiles(calib: np.ndarray) -> None:
    assert calib.shape == (6, 1, 64, 64) and calib.dtype == np.float32
    assert calib.min() >= 0.0 and calib.max() <= 1.0 and calib.std() > 0.01
    assert len({tile.tobytes() for tile in calib}) == 6


def test_fp16_graph_keeps_float32_io_and_close_outputs(tiny_onnx: Path, calib: np.ndarray, tmp_path: Path) -> None:
    converted = PRECISIONS.get("fp16").convert(_inputs(tiny_onnx, calib, tmp_path))
    model = converted.proto
    assert _io_types(model) == [FLOAT] * 6  # the image; mask, pattern, intensity and the two field maps
    assert converted.notes["fp16_initializers"] > 0
    assert converted.notes["range_check_inputs"] == "6 training tiles"
    assert sum(t.data_type == FLOAT16 for t in model.graph.initializer) == converted.notes["fp16_initializers"]
    diffs = output_diffs(run_onnx(tiny_onnx, calib), run_onnx(model, calib))
    assert 0 < max(d.max_abs_diff for d in diffs.values()) < 1e-2
    assert (tmp_path / "export.log").is_file()


def test_fp16_without_training_tiles_and_int8_refuses(tiny_onnx: Path, tmp_path: Path) -> None:
    from hep2edge.errors import ConfigError

    converted = PRECISIONS.get("fp16").convert(_inputs(tiny_onnx, None, tmp_path))
    assert converted.notes["range_check_inputs"].startswith("random")
    with pytest.raises(ConfigError, match="int8 needs calibration tiles from the training data; pass --calib-data"):
        PRECISIONS.get("int8").convert(_inputs(tiny_onnx, None, tmp_path))


def _dq_consumers(model: onnx.ModelProto) -> Counter[str]:
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return Counter(n.op_type for n in model.graph.node if dq_outputs & set(n.input))


def _weight_scale_sizes(model: onnx.ModelProto) -> list[int]:
    """Sizes of the scales of the QuantizeLinear nodes that quantize weight initializers."""
    inits = {t.name: t for t in model.graph.initializer}
    return [
        int(np.prod(inits[n.input[1]].dims))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in inits and n.input[1] in inits
    ]


@pytest.mark.slow
def test_int8_max_calibration_qdq_per_channel_heads_in_high_precision(
    tiny_onnx: Path, calib: np.ndarray, tmp_path: Path
) -> None:
    converted = PRECISIONS.get("int8").convert(
        _inputs(tiny_onnx, calib, tmp_path, calib_method="max", high_precision="fp32")
    )
    model = converted.proto
    assert converted.notes["calibration_tiles"] == 6 and converted.notes["quantize_linear_nodes"] > 10
    assert _io_types(model) == [FLOAT] * 6  # the image; mask, pattern, intensity and the two field maps
    consumers = _dq_consumers(model)
    assert consumers["Conv"] > 10
    assert consumers["Sigmoid"] == 0 and consumers["Softmax"] == 0  # probability heads stay high precision
    scales = _weight_scale_sizes(model)
    # every weight quantized per output channel: one scale only where a conv has one output channel (the
    # intensity head's field map)
    assert len(scales) > 10 and sorted(scales)[1] > 1
    out = run_onnx(model, calib)
    ref = run_onnx(tiny_onnx, calib)
    assert out["mask"].shape == ref["mask"].shape
    assert max(d.max_abs_diff for d in output_diffs(ref, out).values()) < 0.5


@pytest.mark.slow
def test_int8_exclusion_rule_and_entropy_method(tiny_onnx: Path, calib: np.ndarray, tmp_path: Path) -> None:
    base = onnx.load(str(tiny_onnx))
    heads = EXCLUSIONS.get("heads")(base)
    assert heads and all(n.op_type in ("Gemm", "MatMul") for n in base.graph.node if n.name in heads)
    assert excluded_nodes(base, ("heads",), ("^/extra$",))[-1] == "^/extra$"
    converted = PRECISIONS.get("int8").convert(
        _inputs(tiny_onnx, calib[:2], tmp_path, calib_method="entropy", exclude_rules=("heads",), high_precision="fp32")
    )
    assert converted.notes["calibration_method"] == "entropy"
    assert converted.notes["excluded_nodes"] == len(heads)
    consumers = _dq_consumers(converted.proto)
    assert consumers["Gemm"] == 0 and consumers["Conv"] > 10


def test_depthwise_and_se_rules_find_efficientnet_nodes() -> None:
    """The fragile EfficientNet parts are found in a real smp efficientnet graph (tiny input)."""
    torch = pytest.importorskip("torch")
    from hep2edge.contract import ModelContract
    from hep2edge.export.onnx_export import export_fp32_onnx
    from hep2edge.train.model import ModelConfig, build_model

    torch.set_num_threads(2)
    model = build_model(ModelConfig(encoder="efficientnet-b0", decoder_channels=(16, 16, 8, 8, 8), dropout=0.0))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proto = export_fp32_onnx(model.eval(), ModelContract(tile=32, encoder="efficientnet-b0"), Path(tmp) / "m.onnx")
    depthwise = EXCLUSIONS.get("depthwise")(proto)
    se = EXCLUSIONS.get("se")(proto)
    gated = EXCLUSIONS.get("sigmoid-mul")(proto)
    assert len(depthwise) == 16  # one per MBConv block of b0
    assert any("_se_reduce" in n for n in se) and any("_se_expand" in n for n in se)
    assert set(se) - {n for n in se if "_se_" in n} <= set(gated)  # the SE gates are sigmoid-fed Muls
    assert len(gated) > len(depthwise)


def test_the_export_steps_cover_exactly_the_contract_precisions() -> None:
    from hep2edge.contract import PRECISION_NAMES

    assert sorted(PRECISIONS.names()) == sorted(PRECISION_NAMES)
    assert all(PRECISIONS.get(name).filename.startswith("model.") for name in PRECISION_NAMES)


def test_an_integer_file_failing_under_openvino_without_vnni_says_why() -> None:
    from hep2edge.export.pipeline import SATURATION_NOTE, openvino_int8_note
    from hep2edge.export.precisions import PRECISIONS

    int8, fp16 = PRECISIONS.get("int8"), PRECISIONS.get("fp16")
    assert openvino_int8_note(int8, failed=True, int8_dot=False) == SATURATION_NOTE
    assert "saturat" in SATURATION_NOTE and "VNNI" in SATURATION_NOTE
    assert openvino_int8_note(int8, failed=True, int8_dot=True) == ""  # VNNI/AMX: a real accuracy loss
    assert openvino_int8_note(int8, failed=False, int8_dot=False) == ""
    assert openvino_int8_note(fp16, failed=True, int8_dot=False) == ""
    assert [name for name in PRECISIONS.names() if PRECISIONS.get(name).integer] == ["int8"]
    from hep2edge.export.report import OPENVINO_NOTE, ExportReport, PrecisionResult, to_markdown

    failed = PrecisionResult(precision="int8", file="model.int8.onnx", failures=["under openvino: dice drops by 0.03"],
                             notes={OPENVINO_NOTE: SATURATION_NOTE})
    report = ExportReport(out_dir="o", checkpoint="c", checkpoint_reason="given", model_id="m", contract={}, limits={},
                          precisions={"int8": failed})
    failures = to_markdown(report).split("## Failures")[1]
    assert "- int8: under openvino: dice drops by 0.03" in failures and f"- int8, why: {SATURATION_NOTE}" in failures
