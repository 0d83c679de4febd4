"""The fp32 ONNX graph: opset, dynamic batch, named I/O, probabilities inside, contract, checks, simplification."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hep2edge.contract import METADATA_KEY, ModelContract  # noqa: E402
from hep2edge.errors import ContractError  # noqa: E402
from hep2edge.export.onnx_contract import load_checked  # noqa: E402
from hep2edge.export.onnx_export import OUTPUT_NAMES, graph_outputs  # noqa: E402
from hep2edge.export.onnx_graph import (  # noqa: E402
    Fp32Export,
    check_graph,
    export_checked_fp32,
    run_onnx,
    save_model_atomic,
)
from hep2edge.export.verify import output_diffs, torch_outputs  # noqa: E402

if TYPE_CHECKING:
    from hep2edge.train.checkpoint import LoadedCheckpoint


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint: Path) -> LoadedCheckpoint:
    import torch

    torch.set_num_threads(2)
    from hep2edge.train.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def sample() -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(0)
    return rng.random((3, 1, 64, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def fp32(loaded: LoadedCheckpoint, sample: npt.NDArray[np.float32]) -> Fp32Export:
    return export_checked_fp32(loaded.model, loaded.contract, sample, opset=17, do_simplify=True)


def test_graph_io_opset_and_dynamic_batch(fp32: Fp32Export, loaded: LoadedCheckpoint) -> None:
    graph = fp32.proto.graph
    assert max(o.version for o in fp32.proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == list(graph_outputs(loaded.model))
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert dims[1].dim_value == 1
    assert all(d.dim_param and not d.dim_value for d in dims[2:])  # any height and width (whole-field mode)
    ops = {n.op_type for n in graph.node}
    assert {"Sigmoid", "Softmax"} <= ops  # probabilities in the graph


def test_outputs_are_probabilities_and_match_pytorch(fp32: Fp32Export, loaded: LoadedCheckpoint,
                                                     sample: npt.NDArray[np.float32]) -> None:
    for batch in (1, 3):
        out = run_onnx(fp32.proto, sample[:batch])
        assert out["mask"].shape == (batch, 1, 64, 64) and out["pattern"].shape == (batch, 7)
        assert out["intensity"].shape == (batch, 1)
        np.testing.assert_allclose(out["pattern"].sum(1), 1.0, atol=1e-5)
        assert all(((out[name] >= 0) & (out[name] <= 1)).all() for name in OUTPUT_NAMES)
    diffs = output_diffs(torch_outputs(loaded.model, sample), run_onnx(fp32.proto, sample))
    assert max(d.rel_error for d in diffs.values()) < 1e-4


def test_the_graph_runs_a_whole_field_and_its_maps_pool_to_the_heads(fp32: Fp32Export) -> None:
    field = np.random.default_rng(1).random((1, 1, 96, 160), dtype=np.float32)
    out = run_onnx(fp32.proto, field)
    assert out["mask"].shape == (1, 1, 96, 160)
    assert out["pattern_logits"].shape == (1, 7, 3, 5) and out["intensity_logits"].shape == (1, 1, 3, 5)
    logits = out["pattern_logits"].mean(axis=(2, 3))[0]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(softmax, out["pattern"][0], atol=1e-5)  # the mean of the map = the pooled head
    positive = 1 / (1 + np.exp(-out["intensity_logits"].mean()))
    np.testing.assert_allclose(positive, out["intensity"][0, 0], atol=1e-5)
    assert ModelContract.from_metadata({p.key: p.value for p in fp32.proto.metadata_props}).whole_field


def test_simplification_kept_only_with_matching_outputs(fp32: Fp32Export) -> None:
    assert fp32.simplified, fp32.note
    assert "onnxslim" in fp32.note and "outputs within" in fp32.note


def test_refused_simplification_keeps_the_exported_graph(loaded: LoadedCheckpoint, sample: npt.NDArray[np.float32],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hep2edge.export.onnx_export import export_fp32_onnx
    from hep2edge.export.onnx_graph import simplify

    exported = export_fp32_onnx(loaded.model, loaded.contract, tmp_path / "raw.onnx")
    before = exported.SerializeToString()
    # a tolerance no graph can meet: the real onnxslim result is compared and refused
    monkeypatch.setattr("hep2edge.export.onnx_graph.SIMPLIFY_ATOL", -1.0)
    kept, simplified, note = simplify(exported, sample)
    assert kept is exported and not simplified and "exported graph kept" in note
    assert kept.SerializeToString() == before  # onnxslim edits what it is given: it must get a copy


def test_contract_in_metadata_and_checks_pass(fp32: Fp32Export, loaded: LoadedCheckpoint, tmp_path: Path) -> None:
    meta = {p.key: p.value for p in fp32.proto.metadata_props}
    contract = ModelContract.from_json(meta[METADATA_KEY])
    assert contract.precision == "fp32" and contract.weights_sha256 == loaded.contract.weights_sha256
    check_graph(fp32.proto, "test")
    path = tmp_path / "model.onnx"
    save_model_atomic(fp32.proto, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file, not mkstemp's 0600
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    read = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert read == contract


def test_loader_rejects_missing_or_other_version_contract(fp32: Fp32Export, tmp_path: Path) -> None:
    bare = onnx.ModelProto()
    bare.CopyFrom(fp32.proto)
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ContractError, match="bare.onnx: carries no hep2edge contract"):
        load_checked(tmp_path / "bare.onnx")
    other = onnx.ModelProto()
    other.CopyFrom(fp32.proto)
    entry = next(p for p in other.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "schema_version": 99})
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(ContractError, match="contract version 99"):
        load_checked(tmp_path / "other.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not protobuf")
    with pytest.raises(ContractError, match="junk.onnx: not a readable ONNX file"):
        load_checked(tmp_path / "junk.onnx")
    onnx.save(fp32.proto, str(tmp_path / "ok.onnx"))
    with pytest.raises(ContractError, match="precision fp32, expected fp16"):
        load_checked(tmp_path / "ok.onnx", precision="fp16")


def test_checker_failure_is_one_clear_line(fp32: Fp32Export) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(fp32.proto)
    broken.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(ContractError, match="^broken: fails the ONNX checker") as info:
        check_graph(broken, "broken")
    assert "\n" not in str(info.value)


def test_verification_counts_foreground_like_training_and_the_runtime() -> None:
    """p > threshold is foreground (exactly 0.5 is not), and the pad counts nowhere."""
    from hep2edge.export.tiles import TileSet
    from hep2edge.export.verify import predictions
    from hep2edge.runtime.preprocess import threshold_masks

    probs = np.array([0.5, 0.5000001, 0.9, 0.9], np.float32).reshape(1, 1, 2, 2)
    valid = np.array([[[True, True], [True, False]]])  # the last pixel is pad
    tiles = TileSet(images=np.zeros((1, 1, 2, 2), np.float32), masks=np.ones((1, 2, 2), bool), valid=valid,
                    pattern=np.zeros(1, int), intensity=np.zeros(1, int), image_ids=np.array(["a"]),
                    patient_ids=np.array(["1"]), source="test")
    outputs = {"mask": probs, "pattern": np.full((1, 7), 1 / 7), "intensity": np.zeros((1, 1))}
    counts = predictions(outputs, tiles, 0.5).seg_counts[0]
    # [intersection, predicted, target, correct, pixels] over the 3 in-image pixels
    assert counts.tolist() == [2, 2, 3, 2, 3]
    assert threshold_masks(probs, 0.5)[0][valid[0]].sum() == counts[1]
