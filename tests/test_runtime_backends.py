"""Backends: one shared test class over every backend available here, contract refusals, model selection."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from runtime_support import hep2edge, random_batch, write_pngs

from hep2edge.contract import METADATA_KEY, ModelContract
from hep2edge.errors import ConfigError, ContractError, MissingExtraError, RegistryError
from hep2edge.runtime.backends import BACKENDS, BackendConfig, create_backend, is_available
from hep2edge.runtime.backends.base import Backend
from hep2edge.runtime.backends.engine_sidecar import normalise_cc, read_sidecar, sidecar_path
from hep2edge.runtime.backends.select import OnnxRule, cpu_has_int8_dot, select_model

TILE = 64


@pytest.fixture(scope="session")
def tiny_engine(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ONNX built into a TensorRT engine (+ sidecar) for this GPU; only where TensorRT exists."""
    from hep2edge.export.config import BatchProfile
    from hep2edge.export.tensorrt.build import build_engine
    from hep2edge.export.tensorrt.plan import plan_engine

    contract = ModelContract.from_metadata({METADATA_KEY: _contract_json(tiny_onnx)})
    plan = plan_engine(tiny_onnx, contract, BatchProfile(1, 4, 8), 1.0, tmp_path_factory.mktemp("engine"))
    return build_engine(plan, say=lambda _: None).engine_path


def _model_for(name: str, request: pytest.FixtureRequest) -> Path:
    if not is_available(name):
        pytest.skip(f"backend {name} is not available here (TensorRT needs tensorrt + pycuda + a GPU)")
    fixture = {"onnxruntime": "tiny_onnx", "openvino": "tiny_onnx", "torch": "tiny_checkpoint",
               "tensorrt": "tiny_engine"}[name]
    return Path(request.getfixturevalue(fixture))


@pytest.fixture(params=BACKENDS.names())
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "torch":
        import torch

        torch.set_num_threads(2)
    model = _model_for(request.param, request)
    device = "cuda" if request.param == "tensorrt" else "cpu"
    with create_backend(request.param, BackendConfig(model, max_batch=4, device=device)) as opened:
        yield opened


class TestEveryBackend:
    """The same checks over every backend this machine has."""

    def test_reads_the_contract(self, backend: Backend) -> None:
        assert backend.contract.tile == TILE
        assert backend.contract.channels == 1
        assert backend.max_batch == 4
        assert backend.name in backend.describe()

    def test_outputs_are_activated_probabilities(self, backend: Backend) -> None:
        out = backend.infer(random_batch(3))
        assert out["mask"].shape == (3, 1, TILE, TILE) and out["mask"].dtype == np.float32
        assert out["pattern"].shape == (3, 7) and out["intensity"].shape == (3, 1)
        for value in out.values():
            assert np.all((value >= 0) & (value <= 1))
        np.testing.assert_allclose(out["pattern"].sum(axis=1), 1.0, atol=1e-5)

    def test_batch_rows_are_independent(self, backend: Backend) -> None:
        batch = random_batch(4, seed=1)
        whole = backend.infer(batch)
        single = backend.infer(batch[2:3])
        for name in whole:
            np.testing.assert_allclose(whole[name][2:3], single[name], atol=1e-4)

    def test_refuses_oversized_and_misshapen_batches(self, backend: Backend) -> None:
        with pytest.raises(ValueError, match="1 to 4"):
            backend.infer(random_batch(5))
        with pytest.raises(ValueError, match="batch must be"):
            backend.infer(np.zeros((1, 1, TILE + 1, TILE), np.float32))

    def test_infers_from_a_thread_other_than_the_one_that_activated_it(self, backend: Backend) -> None:
        """The pipeline activates the backend in the main thread and infers in its GPU thread (TensorRT:
        the CUDA context is per thread, and pycuda aborts when a thread ends with a context still pushed)."""
        batch = random_batch(2, seed=4)
        here = backend.infer(batch)
        box: dict[str, object] = {}

        def work() -> None:
            try:
                box["out"] = backend.infer(batch)
            except Exception as exc:  # reported by the assertion below
                box["error"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(120)
        assert "error" not in box, box.get("error")
        there = box["out"]
        assert isinstance(there, dict)
        for name in here:
            np.testing.assert_allclose(there[name], here[name], atol=1e-5)
        assert backend.infer(batch[:1])["pattern"].shape == (1, 7)  # still usable here afterwards

    def test_a_whole_field_pass_gives_the_mask_and_maps_that_pool_to_the_heads(self, backend: Backend) -> None:
        field = np.random.default_rng(5).random((1, 1, 96, 160), dtype=np.float32)
        out = backend.infer_field(field)
        assert out["mask"].shape == (1, 1, 96, 160)
        assert out["pattern_logits"].shape == (1, 7, 3, 5) and out["intensity_logits"].shape == (1, 1, 3, 5)
        tile = field[:, :, :TILE, :TILE]
        one, whole = backend.infer(tile), backend.infer_field(tile)  # a tile-size field is a tile
        np.testing.assert_allclose(whole["mask"], one["mask"], atol=1e-4)
        logits = whole["pattern_logits"].mean(axis=(2, 3))[0]
        np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(), one["pattern"][0], atol=1e-4)
        with pytest.raises(ValueError, match="multiples of 32"):
            backend.infer_field(np.zeros((1, 1, 100, 160), np.float32))

    def test_deactivate_releases(self, backend: Backend) -> None:
        backend.deactivate()
        with pytest.raises(RuntimeError, match="activate"):
            backend.infer(random_batch(1))
        backend.activate()
        assert backend.infer(random_batch(1))["pattern"].shape == (1, 7)


def test_onnxruntime_and_torch_agree(tiny_onnx: Path, tiny_checkpoint: Path) -> None:
    import torch

    torch.set_num_threads(2)
    batch = random_batch(2, seed=3)
    with create_backend("onnxruntime", BackendConfig(tiny_onnx, 4, "cpu")) as ort_backend:
        a = ort_backend.infer(batch)
    with create_backend("torch", BackendConfig(tiny_checkpoint, 4, "cpu")) as torch_backend:
        b = torch_backend.infer(batch)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4)


def _rewrite_contract(source: Path, target: Path, change: dict[str, object] | None) -> Path:
    import onnx

    proto = onnx.load(str(source))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if change is not None:
        contract = ModelContract.from_metadata({METADATA_KEY: _contract_json(source)})
        data = {**contract.to_dict(), **change}
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(data)
    onnx.save(proto, str(target))
    return target


def _contract_json(path: Path) -> str:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY]


def test_onnx_without_contract_is_refused_with_what_to_do(tiny_onnx: Path, tmp_path: Path) -> None:
    bare = _rewrite_contract(tiny_onnx, tmp_path / "bare.onnx", None)
    with pytest.raises(ContractError, match="hep2edge export"):
        create_backend("onnxruntime", BackendConfig(bare)).activate()


def test_onnx_whose_contract_disagrees_with_the_graph_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    wrong = _rewrite_contract(tiny_onnx, tmp_path / "wrong.onnx", {"input_name": "pixels"})
    with pytest.raises(ContractError, match="re-export"):
        create_backend("onnxruntime", BackendConfig(wrong)).activate()


def test_not_an_onnx_file_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ContractError, match="junk.onnx: onnxruntime cannot load"):
        create_backend("onnxruntime", BackendConfig(junk)).activate()


def test_unknown_backend_lists_valid_names() -> None:
    with pytest.raises(RegistryError, match="onnxruntime, openvino, tensorrt, torch"):
        create_backend("coreml", BackendConfig(Path("m.onnx")))


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="max batch"):
        BackendConfig(Path("m.onnx"), max_batch=0)
    with pytest.raises(ConfigError, match="device"):
        BackendConfig(Path("m.onnx"), device="tpu")


def test_tensorrt_engine_needs_its_sidecar(tmp_path: Path) -> None:
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ContractError, match="build-engine"):
        create_backend("tensorrt", BackendConfig(engine)).activate()


def _sidecar(engine: Path, tiny_onnx: Path, trt: str = "10.13.0.35", cc: str = "8.7") -> None:
    contract = json.loads(_contract_json(tiny_onnx))
    sidecar_path(engine).write_text(json.dumps({
        "tensorrt_version": trt, "gpu_name": "Orin", "compute_capability": cc, "contract": contract}))


def test_sidecar_mismatch_says_why(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = tmp_path / "model.fp16.engine"
    _sidecar(engine, tiny_onnx)
    sidecar = read_sidecar(engine)
    assert sidecar.contract.tile == TILE
    assert sidecar.mismatch("10.13.1", "Orin", "8.7") is None
    assert "TensorRT 10.13.0.35, running 10.3" in str(sidecar.mismatch("10.3.0", "Orin", "8.7"))
    assert "compute capability 8.7" in str(sidecar.mismatch("10.13.0", "H100", "9.0"))
    assert normalise_cc((9, 0)) == normalise_cc("sm_90") == "9.0"


@pytest.mark.skipif(is_available("tensorrt"), reason="checks the message where TensorRT is absent")
def test_tensorrt_backend_without_tensorrt_names_the_extra(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"plan")
    _sidecar(engine, tiny_onnx)
    with pytest.raises(MissingExtraError, match=r"hep2edge\[(tensorrt|gpu)\]"):
        create_backend("tensorrt", BackendConfig(engine)).activate()


def _cpu_box(monkeypatch: pytest.MonkeyPatch, openvino: bool, vnni: bool = False) -> None:
    """No NVIDIA GPU; OpenVINO installed or not; a CPU with or without int8 dot products."""
    select = "hep2edge.runtime.backends.select"
    monkeypatch.setattr(f"{select}.gpu_present", lambda: False)
    monkeypatch.setattr(f"{select}.is_available", lambda name: name != "openvino" or openvino)
    monkeypatch.setattr(f"{select}.cpu_has_int8_dot", lambda: vnni)


def test_select_by_file_and_folder(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_box(monkeypatch, openvino=False)
    assert select_model(tiny_onnx).backend == "onnxruntime"
    with pytest.raises(ConfigError, match="cannot tell the backend"):
        (tmp_path / "model.bin").write_bytes(b"x")
        select_model(tmp_path / "model.bin")
    export = tmp_path / "runs" / "export" / "3"
    export.mkdir(parents=True)
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        (export / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    chosen = select_model(None)
    assert chosen.model == Path("runs/export/3/model.onnx") and chosen.backend == "onnxruntime"
    assert "newest export" in chosen.reason and "no GPU" in chosen.reason
    _cpu_box(monkeypatch, openvino=True, vnni=False)
    assert (select_model(export).backend, select_model(export).model.name) == ("openvino", "model.onnx")
    assert select_model(tiny_onnx).backend == "openvino"
    _cpu_box(monkeypatch, openvino=True, vnni=True)  # OpenVINO runs Q/DQ as int8 on VNNI / AMX
    assert (select_model(export).backend, select_model(export).model.name) == ("openvino", "model.int8.onnx")
    assert select_model(export, "onnxruntime").model.name == "model.onnx"
    monkeypatch.setattr("hep2edge.runtime.backends.select.gpu_present", lambda: True)
    assert select_model(export).model.name == "model.fp16.onnx"
    with pytest.raises(ConfigError, match="no usable engine"):
        select_model(export, "tensorrt")


def test_select_without_any_export_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="`model`"):
        select_model(None)


def test_int8_dot_products_are_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\n")
    assert not cpu_has_int8_dot(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_has_int8_dot(info) and not cpu_has_int8_dot(tmp_path / "missing")


def test_runtime_and_onnxruntime_backend_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, hep2edge.runtime, hep2edge.runtime.service, hep2edge.runtime.backends.select;"
        "from hep2edge.runtime.backends import BACKENDS;"
        "BACKENDS.get('onnxruntime').load(); BACKENDS.get('tensorrt').load();"
        "import hep2edge.runtime.cuda_preprocess, hep2edge.cli.runtime_commands;"
        "print(sorted(m for m in sys.modules if m in ('torch', 'tensorrt', 'pycuda')"
        " or m.startswith('hep2edge.train.') and m != 'hep2edge.train.settings'))"
    )  # the CLI's train options come from hep2edge.train.settings, which imports no torch
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_onnxruntime_runs_an_fp16_graph_with_float32_io(tiny_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("modelopt", reason="the fp16 graph is made by ModelOpt AutoCast (hep2edge[export])")
    import onnx

    from hep2edge.export.config import Int8Options
    from hep2edge.export.fp16 import convert_fp16
    from hep2edge.export.onnx_contract import attach_contract, read_contract
    from hep2edge.export.precisions import ConversionInputs

    converted = convert_fp16(ConversionInputs(tiny_onnx, lambda: random_batch(1), Int8Options(), tmp_path / "fp16.log"))
    attach_contract(converted.proto, read_contract(onnx.load(str(tiny_onnx))).with_precision("fp16"))
    fp16 = tmp_path / "model.fp16.onnx"
    onnx.save(converted.proto, str(fp16))
    batch = random_batch(3, seed=5)
    with create_backend("onnxruntime", BackendConfig(tiny_onnx, 4, "cpu")) as reference, \
            create_backend("onnxruntime", BackendConfig(fp16, 4, "cpu")) as half:
        assert half.precision == "fp16"
        want, got = reference.infer(batch), half.infer(batch)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=5e-3)


def test_cuda_preprocessing_needs_the_tensorrt_backend(tiny_onnx: Path) -> None:
    from hep2edge.runtime.executors import HostExecutor, make_executor

    with create_backend("onnxruntime", BackendConfig(tiny_onnx, 4, "cpu")) as backend:
        assert isinstance(make_executor(backend, "auto"), HostExecutor)
        with pytest.raises(ConfigError, match="`preprocess` cuda needs the tensorrt or torch backend"):
            make_executor(backend, "cuda")


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None, reason="pycuda is installed: no fallback to see")
def test_auto_preprocessing_falls_back_to_the_host_when_cuda_cannot_start(
    tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A TensorRT box without pycuda (or nvcc) runs `--preprocess auto` on the host; `cuda` fails loudly."""
    from hep2edge.runtime.executors import HostExecutor, make_executor

    with create_backend("onnxruntime", BackendConfig(tiny_onnx, 4, "cpu")) as backend:
        monkeypatch.setattr(backend, "name", "tensorrt")  # stands in for the engine: only the name is read first
        monkeypatch.setattr(backend, "on_this_thread", contextlib.nullcontext, raising=False)
        monkeypatch.setattr(backend, "stream", None, raising=False)
        with caplog.at_level("WARNING"):
            assert isinstance(make_executor(backend, "auto"), HostExecutor)
        assert "MissingExtraError" in caplog.text and "preprocessing on the host instead" in caplog.text
        with pytest.raises(MissingExtraError):
            make_executor(backend, "cuda")


def test_refused_model_leaves_results_untouched(tiny_onnx: Path, tmp_path: Path) -> None:
    """The backend and its contract come before the journal: a refused model writes no results.db or config."""
    wrong = _rewrite_contract(tiny_onnx, tmp_path / "wrong.onnx", {"input_name": "pixels"})
    images = write_pngs(tmp_path / "in", 1, (TILE, TILE))
    out = tmp_path / "results"
    result = hep2edge("analyze", str(images[0]), "--model", str(wrong), "--out", str(out), cwd=tmp_path)
    assert result.returncode != 0
    assert "re-export" in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []  # made and checked writable up front, nothing written in it


@pytest.mark.parametrize(("installed", "extra"), [(False, "onnx"), (True, "openvino")])
def test_a_file_whose_backend_is_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         installed: bool, extra: str) -> None:
    """No GPU: an ONNX file goes to OpenVINO where its module is found, else ONNX Runtime; neither importable here."""
    select = "hep2edge.runtime.backends.select"
    monkeypatch.setattr(f"{select}.gpu_present", lambda: False)
    monkeypatch.setattr(f"{select}.is_available", lambda name: False)
    monkeypatch.setattr(f"{select}.onnx_rule", lambda backend="auto": OnnxRule(
        "openvino" if installed else "onnxruntime", ("fp32",), "test"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match=rf"pip install 'hep2edge\[{extra}\]'"):
        select_model(tmp_path / "m.onnx")


def test_a_file_of_an_unknown_precision_is_not_taken_for_fp32(tiny_onnx: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(tiny_onnx, folder / "model.bf16.onnx")
    shutil.copy(tiny_onnx, folder / "model.int8.onnx")
    chosen = select_model(folder, "onnxruntime")
    assert chosen.model.name == "model.int8.onnx"
