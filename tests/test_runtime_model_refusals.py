"""A faulty model is refused at load, in one line, before any result or journal exists; a fault found at the first
batch is a ContractError (a model fault, never the input's); a malformed engine sidecar is one ContractError and
`--model FOLDER` falls back to the ONNX file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from runtime_support import db_rows, hep2edge, random_batch, write_pngs

from hep2edge.contract import METADATA_KEY, OUTPUTS, ModelContract
from hep2edge.errors import ContractError
from hep2edge.labels import PATTERNS
from hep2edge.runtime.backends import BackendConfig, create_backend
from hep2edge.runtime.backends.base import Backend
from hep2edge.runtime.backends.engine_sidecar import read_sidecar, sidecar_path
from hep2edge.runtime.backends.select import onnx_rule, select_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TILE = 64
GOOD = ModelContract(tile=TILE).to_dict()
NESTED = "[" * 100_000  # json.loads: RecursionError


def write_onnx(path: Path, contract: str | dict[str, Any] = GOOD, width: int = 7, dynamic: bool = False) -> Path:
    """A tiny torch-free model: `width` pattern classes, stated in the file or (`dynamic`) known only from data."""
    from onnx import TensorProto, helper, numpy_helper

    def value(name: str, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    consts: dict[str, np.ndarray] = {
        "w": np.full((TILE * TILE, 8), 1e-3, np.float32), "wi": np.full((TILE * TILE, 1), 1e-3, np.float32),
        "zero": np.array([0], np.int64), "one": np.array([1], np.int64), "width": np.array([width], np.int64)}
    nodes = [helper.make_node("Sigmoid", ["image"], ["mask"]), helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits8"]), helper.make_node("MatMul", ["flat", "wi"], ["il"]),
             helper.make_node("Sigmoid", ["il"], ["intensity"])]
    if dynamic:  # end = width + 0 * int(min(image)): shape inference cannot know the pattern width
        nodes += [helper.make_node("ReduceMin", ["image"], ["low"], keepdims=0),
                  helper.make_node("Cast", ["low"], ["low_int"], to=TensorProto.INT64),
                  helper.make_node("Mul", ["low_int", "zero"], ["nothing"]),
                  helper.make_node("Add", ["nothing", "width"], ["end"])]
    else:
        nodes.append(helper.make_node("Identity", ["width"], ["end"]))
    nodes += [helper.make_node("Slice", ["logits8", "zero", "end", "one"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["pattern"], axis=1)]
    outputs = [value("mask", ["N", 1, TILE, TILE]), value("pattern", ["N", "k" if dynamic else width]),
               value("intensity", ["N", 1])]
    graph = helper.make_graph(nodes, "tiny", [value("image", ["N", 1, TILE, TILE])], outputs,
                              [numpy_helper.from_array(array, name) for name, array in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, contract if isinstance(contract, str) else json.dumps(contract)
    onnx.save(model, str(path))
    return path


def _open(path: Path) -> Backend:
    return create_backend("onnxruntime", BackendConfig(path, max_batch=4, device="cpu"))


def test_the_tiny_model_runs(tmp_path: Path) -> None:
    """The control: the refusals below come from the contract or the shapes, not from a broken graph."""
    with _open(write_onnx(tmp_path / "good.onnx")) as backend:
        out = backend.infer(random_batch(2))
    assert out["pattern"].shape == (2, 7) and out["intensity"].shape == (2, 1)


BAD_CONTRACTS = [  # (field, value, words of the refusal)
    ("tile", 0, "tile is 0"),
    ("tile", -64, "tile is -64"),
    ("tile", True, "tile is True"),
    ("tile", "64", "tile is '64'"),
    ("tile", 1, "tile is 1"),
    ("mask_threshold", 1.5, "mask_threshold is 1.5"),
    ("mask_threshold", "0.5", "mask_threshold is '0.5'"),
    ("precision", "fp8", "precision is 'fp8'"),
    ("channels", 2, "channels is 2"),
    ("patterns", list(PATTERNS[:5]), "patterns lists 5 class(es) but the outputs give 7"),
    ("patterns", [*PATTERNS[:6], "speckled"], "patterns repeats ['speckled']"),
    ("intensities", ["positive"], "intensities lists 1 class(es)"),
    ("normalization", {"mode": "fixed", "mean": 0.0, "std": float("inf")}, "normalization std is inf"),
    ("input_dtype", "uint8", "input_dtype is 'uint8'"),
    ("input_layout", "NHWC", "input_layout is 'NHWC'"),
    ("outputs", {**OUTPUTS, "pattern": "(N, 5) float32 pattern probabilities"}, "patterns lists 7 class(es)"),
]


@pytest.mark.parametrize(("name", "value", "words"), BAD_CONTRACTS, ids=[f"{n}={v!r:.20}" for n, v, _ in BAD_CONTRACTS])
def test_bad_contract_values_are_refused_at_load(tmp_path: Path, name: str, value: object, words: str) -> None:
    path = write_onnx(tmp_path / "bad.onnx", {**GOOD, name: value})
    with pytest.raises(ContractError) as info:
        _open(path).activate()
    message = str(info.value)
    assert message.startswith(f"{path}: {words}") and "re-export" in message and "\n" not in message, message


def test_deeply_nested_contract_is_one_line(tmp_path: Path) -> None:
    path = write_onnx(tmp_path / "nested.onnx", NESTED)
    with pytest.raises(ContractError, match=r"nested\.onnx: contract is not valid JSON"):
        _open(path).activate()


def test_output_width_off_the_contract_is_refused_at_load(tmp_path: Path) -> None:
    """The file states pattern (N, 5) while the contract has 7 patterns: refused before any batch runs."""
    path = write_onnx(tmp_path / "w5.onnx", width=5)
    with pytest.raises(ContractError, match=r"w5\.onnx: output 'pattern' is \('N', 5\), the contract says \('N', 7\)"):
        _open(path).activate()


def test_output_width_found_at_the_first_batch_is_a_contract_error(tmp_path: Path) -> None:
    """A width only the data reveals: the first batch raises ContractError (the run stops; inputs never fail)."""
    from hep2edge.runtime.executors import Chunk, HostExecutor
    from hep2edge.tiling import tile_grid

    with _open(write_onnx(tmp_path / "dyn5.onnx", width=5, dynamic=True)) as backend:
        with pytest.raises(ContractError, match=r"dyn5\.onnx: model output 'pattern' is \(2, 5\)"):
            backend.infer(random_batch(2))
        gray = np.zeros((TILE, TILE), np.uint8)
        chunk = Chunk(0, gray, tile_grid(TILE, TILE, TILE), 0, 1, random_batch(1))
        with pytest.raises(ContractError, match="re-export"):
            HostExecutor(backend).run([chunk])


class _Missing(Backend):
    """A backend whose model gives no intensity output."""

    name = "fake"

    def _load(self) -> ModelContract:
        return ModelContract(tile=TILE)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"mask": np.zeros((len(batch), 1, TILE, TILE)), "pattern": np.zeros((len(batch), 7))}

    def _release(self) -> None:
        """Nothing to free."""


def test_a_missing_output_is_a_contract_error_not_a_key_error() -> None:
    with _Missing(BackendConfig(Path("fake.onnx"))) as backend, \
            pytest.raises(ContractError, match=r"fake\.onnx: model gave no 'intensity' output"):
        backend.infer(random_batch(1))


# --- the CLI: one line, nonzero, no results.db -----------------------------------------------------------------
CLI_MODELS = {
    "tile-true": lambda path: write_onnx(path, {**GOOD, "tile": True}),
    "threshold-1.5": lambda path: write_onnx(path, {**GOOD, "mask_threshold": 1.5}),
    "precision-fp8": lambda path: write_onnx(path, {**GOOD, "precision": "fp8"}),
    "nested-json": lambda path: write_onnx(path, NESTED),
    "pattern-width-5": lambda path: write_onnx(path, width=5),
}


@pytest.mark.parametrize("kind", list(CLI_MODELS))
def test_analyze_with_a_bad_model_exits_with_one_line_and_no_results(tmp_path: Path, kind: str) -> None:
    model = CLI_MODELS[kind](tmp_path / "bad.onnx")
    (image,) = write_pngs(tmp_path / "in", 1, (TILE, TILE))
    out = tmp_path / "R"
    result = hep2edge("analyze", str(image), "--model", str(model), "--backend", "onnxruntime", "--out", str(out),
                      cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "bad.onnx" in lines[0], result.stderr
    assert not (out / "results.db").exists()


def test_a_shape_fault_at_the_first_batch_stops_the_run_without_failing_the_input(tmp_path: Path) -> None:
    model = write_onnx(tmp_path / "dyn5.onnx", width=5, dynamic=True)
    (image,) = write_pngs(tmp_path / "in", 1, (TILE, TILE))
    out = tmp_path / "R"
    result = hep2edge("analyze", str(image), "--model", str(model), "--out", str(out), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "model output 'pattern'" in lines[0], result.stderr
    assert db_rows(out, "SELECT COUNT(*) FROM inputs WHERE state = 'failed'") == [(0,)]
    assert db_rows(out, "SELECT COUNT(*) FROM results") == [(0,)]


# --- engine sidecars -------------------------------------------------------------------------------------------
def _good_sidecar() -> dict[str, Any]:
    return {"tensorrt_version": "10.13.0.35", "gpu_name": "Orin", "compute_capability": "8.7", "contract": GOOD}


BAD_SIDECARS: dict[str, bytes] = {
    "not-utf8": b"\xff\xfe{\x00}",
    "nested": NESTED.encode(),
    "not-json": b"{tensorrt",
    "a-list": b"[1, 2]",
    "contract-not-object": json.dumps({**_good_sidecar(), "contract": 3}).encode(),
    "build-not-object": json.dumps({**_good_sidecar(), "build": 5}).encode(),
    "tile-true": json.dumps({**_good_sidecar(), "contract": {**GOOD, "tile": True}}).encode(),
    "threshold-2": json.dumps({**_good_sidecar(), "contract": {**GOOD, "mask_threshold": 2}}).encode(),
    "gpu-a-list": json.dumps({**_good_sidecar(), "gpu_name": ["Orin"]}).encode(),
    "no-trt-version": json.dumps({k: v for k, v in _good_sidecar().items() if k != "tensorrt_version"}).encode(),
}


@pytest.mark.parametrize("kind", list(BAD_SIDECARS))
def test_every_malformed_sidecar_is_one_contract_error_naming_it(tmp_path: Path, kind: str) -> None:
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_bytes(BAD_SIDECARS[kind])
    with pytest.raises(ContractError) as info:
        read_sidecar(engine)
    message = str(info.value)
    assert str(sidecar_path(engine)) in message and "\n" not in message, message
    assert "build-engine" in message or "re-export" in message, message


@pytest.fixture
def tensorrt_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for TensorRT 10.13 on an Orin (sm 8.7), so `select` reads sidecars on a CPU machine."""
    import hep2edge.runtime.backends.tensorrt_backend as trt_backend

    monkeypatch.setattr("hep2edge.runtime.backends.select.is_available", lambda name: True)
    monkeypatch.setattr("hep2edge.runtime.backends.select.gpu_present", lambda: False)
    monkeypatch.setattr(trt_backend, "import_pycuda", lambda: None)
    monkeypatch.setattr(trt_backend, "current_gpu", lambda cuda: ("Orin", "8.7"))
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: SimpleNamespace(__version__="10.13.0"))


def _export_folder(folder: Path, sidecar: bytes) -> Path:
    folder.mkdir()
    (folder / "model.fp16.engine").write_bytes(b"plan")
    sidecar_path(folder / "model.fp16.engine").write_bytes(sidecar)
    (folder / "model.onnx").write_bytes(b"onnx")
    return folder


@pytest.mark.usefixtures("tensorrt_here")
def test_folder_with_a_good_sidecar_picks_the_engine(tmp_path: Path) -> None:
    chosen = select_model(_export_folder(tmp_path / "export", json.dumps(_good_sidecar()).encode()))
    assert chosen.backend == "tensorrt" and chosen.model.name == "model.fp16.engine"


@pytest.mark.usefixtures("tensorrt_here")
@pytest.mark.parametrize("kind", list(BAD_SIDECARS))
def test_folder_with_a_bad_sidecar_falls_back_to_onnx(tmp_path: Path, kind: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hep2edge.runtime.backends.select"):
        chosen = select_model(_export_folder(tmp_path / "export", BAD_SIDECARS[kind]))
    assert chosen.backend == onnx_rule().backend and chosen.model.name == "model.onnx"
    assert "model.fp16.engine" in chosen.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "model.fp16.engine" in warnings[0] and "\n" not in warnings[0], warnings
