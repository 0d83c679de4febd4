"""Everything before the TensorRT builder call (plans, profiles, cache paths, sidecars, trtexec), and a real
build where TensorRT exists."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from cli_support import run_cli_without

from hep2edge.contract import ModelContract, file_sha256
from hep2edge.export.config import BatchProfile, ExportConfig
from hep2edge.export.tensorrt.build import network_flags
from hep2edge.export.tensorrt.gpu_info import parse_nvidia_smi
from hep2edge.export.tensorrt.plan import TIMING_CACHE, engine_path_for, plan_engine, sidecar_content
from hep2edge.export.tensorrt.probe import real_tensorrt
from hep2edge.export.tensorrt.trtexec import trtexec_command

CONTRACT = ModelContract(tile=64, encoder="resnet18", weights_sha256="ab" * 32)


def _onnx(tmp_path: Path, name: str = "model.fp16.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(b"onnx bytes stand-in for hashing")
    return path


def test_plan_paths_profile_and_workspace(tmp_path: Path) -> None:
    plan = plan_engine(_onnx(tmp_path), CONTRACT.with_precision("fp16"), BatchProfile(1, 4, 8), 2.5)
    assert plan.engine_path == tmp_path / "model.fp16.engine"
    assert plan.sidecar_path == tmp_path / "model.fp16.engine.json"
    assert plan.timing_cache_path == tmp_path / TIMING_CACHE
    assert plan.workspace_bytes == int(2.5 * 2**30)
    assert plan.profile() == {"image": {"min": [1, 1, 64, 64], "opt": [4, 1, 64, 64], "max": [8, 1, 64, 64]}}
    elsewhere = plan_engine(plan.onnx_path, CONTRACT, BatchProfile(), 1, tmp_path / "target")
    assert elsewhere.engine_path == tmp_path / "target" / "model.fp32.engine"
    assert engine_path_for(Path("x/model.onnx"), "int8") == Path("x/model.int8.engine")


def test_a_whole_field_model_gets_a_second_profile_for_one_field(tmp_path: Path) -> None:
    from hep2edge.errors import ConfigError
    from hep2edge.export.config import parse_batch

    contract = ModelContract(tile=384, encoder="resnet18").with_field_outputs()
    plan = plan_engine(_onnx(tmp_path), contract, parse_batch("1,8,16", "1040x1388"), 1)
    assert plan.field_profile() == {"image": {"min": [1, 1, 384, 384], "opt": [1, 1, 1056, 1408],
                                              "max": [1, 1, 1056, 1408]}}  # padded to multiples of 32
    assert plan.profiles() == [plan.profile(), plan.field_profile()]
    assert sidecar_content(plan, "10.13", "H100", "9.0")["field_profile"] == plan.field_profile()
    assert plan_engine(_onnx(tmp_path), contract, parse_batch(None, "none"), 1).profiles() == [plan.profile()]
    assert plan_engine(_onnx(tmp_path), CONTRACT, BatchProfile(), 1).field_profile() is None  # a tile-only model
    with pytest.raises(ConfigError, match="--field-size 1040: expected HEIGHTxWIDTH"):
        parse_batch(None, "1040")


def test_sidecar_content_names_source_and_contract(tmp_path: Path) -> None:
    plan = plan_engine(_onnx(tmp_path), CONTRACT.with_precision("fp16"), BatchProfile(2, 4, 6), 1)
    side = sidecar_content(plan, "10.13.0.35", "NVIDIA H100", "9.0")
    assert side["onnx_sha256"] == file_sha256(plan.onnx_path) and side["onnx_file"] == "model.fp16.onnx"
    assert side["precision"] == "fp16" and side["strongly_typed"] is True
    assert side["tensorrt_version"] == "10.13.0.35" and side["compute_capability"] == "9.0"
    assert side["profile"]["image"]["max"] == [6, 1, 64, 64]
    assert ModelContract.from_dict(side["contract"]) == CONTRACT.with_precision("fp16")


def test_sidecar_is_what_the_runtime_reads(tmp_path: Path) -> None:
    sidecar_mod = pytest.importorskip("hep2edge.runtime.backends.engine_sidecar")
    plan = plan_engine(_onnx(tmp_path), CONTRACT.with_precision("int8"), BatchProfile(), 1)
    plan.sidecar_path.write_text(json.dumps(sidecar_content(plan, "10.3.0", "Orin", "8.7")))
    read = sidecar_mod.read_sidecar(plan.engine_path)
    assert read.contract.precision == "int8" and read.compute_capability == "8.7"
    assert read.mismatch("10.3.1", "Orin", "8.7") is None


def test_trtexec_command_matches_the_plan(tmp_path: Path) -> None:
    plan = plan_engine(_onnx(tmp_path), CONTRACT.with_precision("fp16"), BatchProfile(1, 8, 16), 4)
    assert trtexec_command(plan) == (
        "trtexec --onnx=model.fp16.onnx --stronglyTyped --minShapes=image:1x1x64x64 "
        "--optShapes=image:8x1x64x64 --maxShapes=image:16x1x64x64 --memPoolSize=workspace:4096 "
        "--timingCacheFile=timing.cache --saveEngine=model.fp16.engine"
    )
    elsewhere = plan_engine(plan.onnx_path, plan.contract, BatchProfile(1, 8, 16), 4, tmp_path / "target")
    assert trtexec_command(elsewhere).endswith(  # run in the ONNX folder, written into --out
        "--timingCacheFile=target/timing.cache --saveEngine=target/model.fp16.engine")


def test_strongly_typed_flag_on_10x_and_absent_flag() -> None:
    flag_enum = types.SimpleNamespace(STRONGLY_TYPED=1)
    assert network_flags(types.SimpleNamespace(NetworkDefinitionCreationFlag=flag_enum)) == 2
    assert network_flags(types.SimpleNamespace()) == 0


def test_nvidia_smi_parsing() -> None:
    text = "NVIDIA H100 80GB HBM3, 9.0\nOrin (nvgpu), 8.7\n"
    assert parse_nvidia_smi(text, 1).name == "Orin (nvgpu)"
    assert parse_nvidia_smi(text, 0).compute_capability == "9.0"
    assert parse_nvidia_smi(text, 2) is None


needs_no_tensorrt = pytest.mark.skipif(real_tensorrt() is not None, reason="TensorRT is installed here")
needs_tensorrt = pytest.mark.skipif(real_tensorrt() is None, reason="TensorRT is not importable on this machine")


@needs_no_tensorrt
def test_without_tensorrt_engine_request_prints_trtexec(tmp_path: Path) -> None:
    from hep2edge.export.tensorrt.engines import NO_TENSORRT, engines_for

    for name in ("model.onnx", "model.fp16.onnx"):
        _onnx(tmp_path, name)
    said: list[str] = []
    config = ExportConfig(precisions=("fp32", "fp16"), engine=True)
    info = engines_for(config, tmp_path, CONTRACT, said.append)
    assert info["status"] == NO_TENSORRT and said[0] == NO_TENSORRT
    assert len(info["trtexec"]) == 2 and "--saveEngine=model.fp16.engine" in said[2]
    assert not list(tmp_path.glob("*.engine"))


@needs_no_tensorrt
def test_build_engine_command_without_tensorrt(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from hep2edge.cli.app import main

    monkeypatch.setattr(sys, "argv", ["hep2edge", "build-engine", str(tiny_onnx), "--batch", "1,2,4"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err
    assert "TensorRT is not importable here" in err and "trtexec --onnx=model.onnx --stronglyTyped" in err
    assert "--maxShapes=image:4x1x64x64" in err
    assert not list(tiny_onnx.parent.glob("*.engine"))




@needs_no_tensorrt
@pytest.mark.parametrize(("blocked", "expected"), [
    (("torch", "segmentation_models_pytorch", "onnxruntime", "modelopt"), "TensorRT is not importable here"),
    (("torch", "onnx"), "pip install 'hep2edge[jetson]'"),
])
def test_build_engine_on_a_box_without_torch(tiny_onnx: Path, tmp_path: Path, blocked: tuple[str, ...],
                                             expected: str) -> None:
    """A Jetson (no torch) reads the contract with onnx alone; without onnx it is told which extra to install."""
    result = run_cli_without(blocked, ["build-engine", str(tiny_onnx), "--out", str(tmp_path)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_build_engine_rejects_onnx_without_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    onnx = pytest.importorskip("onnx")
    from hep2edge.cli.app import main

    bare = tmp_path / "bare.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(bare))
    monkeypatch.setattr(sys, "argv", ["hep2edge", "build-engine", str(bare)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and "bare.onnx: carries no hep2edge contract" in capsys.readouterr().err


@pytest.mark.tensorrt
@needs_tensorrt
def test_real_build_writes_plain_engine_sidecar_and_timing_cache(tiny_onnx: Path, tmp_path: Path) -> None:
    import tensorrt as trt

    from hep2edge.export.tensorrt.engines import build_engine_for_onnx

    engine = build_engine_for_onnx(tiny_onnx, BatchProfile(1, 2, 4), 1.0, tmp_path)
    assert engine == tmp_path / "model.fp32.engine"
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(engine.read_bytes()) is not None  # plain plan bytes
    side = json.loads((tmp_path / "model.fp32.engine.json").read_text())
    assert side["onnx_sha256"] == file_sha256(tiny_onnx) and side["tensorrt_version"] == trt.__version__
    cache = tmp_path / TIMING_CACHE
    assert cache.stat().st_size > 0
    from hep2edge.export.onnx_contract import load_checked
    from hep2edge.export.tensorrt.build import build_engine

    plan = plan_engine(tiny_onnx, load_checked(tiny_onnx)[1], BatchProfile(1, 2, 4), 1.0, tmp_path)
    assert build_engine(plan, say=lambda _: None).timing_cache_reused  # the second build reads the cache
