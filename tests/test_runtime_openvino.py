"""The OpenVINO backend beyond the shared backend class: its contract refusals, devices, precision hint, compiled-model
cache, agreement with ONNX Runtime, and `analyze --backend openvino` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_support import hep2edge, write_pngs
from test_runtime_model_refusals import GOOD, NESTED, write_onnx

from hep2edge.errors import ConfigError, ContractError
from hep2edge.runtime.backends import BackendConfig, create_backend
from hep2edge.runtime.backends.base import Backend
from hep2edge.runtime.settings import RunConfig

pytest.importorskip("openvino")
from hep2edge.runtime.backends.openvino_backend import CACHE_DIR, openvino_device, precision_hint


def _open(path: Path, **config: Any) -> Backend:
    return create_backend("openvino", BackendConfig(path, max_batch=4, **config))


@pytest.mark.parametrize("contract", [{**GOOD, "tile": 0}, {**GOOD, "mask_threshold": 2}, "not json", NESTED],
                         ids=["tile-0", "threshold-2", "not-json", "nested"])
def test_a_bad_contract_is_refused_at_load(tmp_path: Path, contract: object) -> None:
    backend = _open(write_onnx(tmp_path / "bad.onnx", contract))  # type: ignore[arg-type]
    with pytest.raises(ContractError) as caught:
        backend.activate()
    assert str(tmp_path / "bad.onnx") in str(caught.value) and "\n" not in str(caught.value)


def test_a_model_without_a_contract_and_one_off_its_outputs_are_refused(tmp_path: Path) -> None:
    path = write_onnx(tmp_path / "plain.onnx")
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match="not a hep2edge model"):
        _open(path).activate()
    with pytest.raises(ContractError, match="'pattern'"):
        _open(write_onnx(tmp_path / "w5.onnx", width=5)).activate()


def test_devices_it_does_not_see_are_named_with_those_it_does() -> None:
    assert openvino_device("auto", ["CPU"]) == openvino_device("cpu", ["CPU", "GPU.0"]) == "CPU"
    assert openvino_device("gpu", ["CPU", "GPU.0"]) == "GPU"
    with pytest.raises(ConfigError, match="sees no NPU here; it sees CPU, GPU.0"):
        openvino_device("npu", ["CPU", "GPU.0"])
    with pytest.raises(ConfigError, match="OpenVINO runs on"):
        openvino_device("cuda", ["CPU"])


def test_the_precision_hint_is_bf16_only_where_the_cpu_computes_it() -> None:
    assert precision_hint("auto", ["FP32", "INT8"]) == "f32"
    assert precision_hint("auto", ["FP32", "BF16", "INT8"]) == "bf16"
    assert precision_hint("f32", ["BF16"]) == "f32" and precision_hint("bf16", ["FP32"]) == "bf16"
    with pytest.raises(ConfigError, match="--precision-hint fp8"):
        BackendConfig(Path("m.onnx"), inference_precision="fp8")


def test_matches_onnxruntime_and_caches_the_compiled_model(tiny_onnx: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    batch = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
    with _open(model, device="cpu", inference_precision="f32") as ov, \
            create_backend("onnxruntime", BackendConfig(model, max_batch=4, device="cpu")) as ort:
        ours, theirs = ov.infer(batch), ort.infer(batch)
        assert ov.precision == "fp32" and "openvino CPU, f32" in ov.describe()
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], atol=2e-4)
    cached = list((tmp_path / CACHE_DIR).iterdir())
    assert cached, "no compiled model was cached beside the model"
    with _open(model, device="cpu", inference_precision="f32") as again:
        np.testing.assert_allclose(again.infer(batch)["pattern"], ours["pattern"], atol=1e-6)
    assert sorted(p.name for p in (tmp_path / CACHE_DIR).iterdir()) == sorted(p.name for p in cached)


def test_the_precision_hint_is_openvinos_alone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--precision-hint"):
        RunConfig("analyze", tmp_path, tmp_path / "m.onnx", "onnxruntime", inference_precision="bf16")
    with pytest.raises(ConfigError, match="OpenVINO's"):
        RunConfig("analyze", tmp_path, tmp_path / "m.onnx", "onnxruntime", device="gpu")


def test_analyze_with_openvino_names_it_in_the_result(tiny_onnx: Path, tmp_path: Path) -> None:
    (image,) = write_pngs(tmp_path / "in", 1, shape=(90, 120))
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    result = hep2edge("analyze", str(image), "--model", str(model), "--backend", "openvino", "--out",
                      str(tmp_path / "R"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "R" / f"{image.stem}.json").read_text())
    assert document["model"]["backend"] == "openvino"
    assert "inference_precision: auto" in (tmp_path / "R" / "config.yaml").read_text()
    refused = hep2edge("analyze", str(image), "--model", str(model), "--backend", "openvino", "--device", "npu",
                       "--out", str(tmp_path / "R2"), cwd=tmp_path)
    assert refused.returncode == 2 and "sees no NPU here; it sees CPU" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "R2" / "results.db").exists()
