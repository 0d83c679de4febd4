"""The torch backend's GPU stand-in options: fp16, channels_last, CUDA graphs (graph tests need a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hep2edge.errors import ConfigError
from hep2edge.runtime.backends import BackendConfig, create_backend

torch = pytest.importorskip("torch")
from hep2edge.runtime.backends.torch_backend import TorchBackend, TorchOptions  # noqa: E402

TILE = 64


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, TILE, TILE), dtype=np.float32)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def test_options_come_from_the_backend_config(tiny_checkpoint: Path) -> None:
    backend = create_backend("torch", BackendConfig(tiny_checkpoint, 4, "cpu", torch_precision="fp16",
                                                    channels_last=True))
    assert isinstance(backend, TorchBackend) and backend.options == TorchOptions("fp16", True)
    assert TorchBackend(BackendConfig(tiny_checkpoint)).options == TorchOptions()


def test_bad_options_are_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="valid: fp32, fp16"):
        TorchOptions("int8")
    with pytest.raises(ConfigError, match="--torch-precision int8: valid: fp32, fp16"):
        BackendConfig(tiny_checkpoint, torch_precision="int8")


def test_fp16_channels_last_matches_fp32(tiny_checkpoint: Path) -> None:
    batch = _batch(3)
    with create_backend("torch", BackendConfig(tiny_checkpoint, 4, "cpu")) as fp32:
        reference = fp32.infer(batch)
    with create_backend("torch", BackendConfig(tiny_checkpoint, 4, "cpu", torch_precision="fp16",
                                               channels_last=True)) as fp16:
        assert fp16.precision == "fp16"
        assert "fp16, channels_last" in fp16.describe()
        out = fp16.infer(batch)
    for name, value in reference.items():
        assert out[name].dtype == np.float32 and out[name].shape == value.shape
        np.testing.assert_allclose(out[name], value, atol=2e-2)


def test_cuda_graph_needs_a_gpu(tiny_checkpoint: Path) -> None:
    backend = TorchBackend(BackendConfig(tiny_checkpoint, 4, "cpu", cuda_graph=True))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        backend.activate()


@pytest.mark.gpu
def test_cuda_graph_replays_match_eager(tiny_checkpoint: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    eager = TorchBackend(BackendConfig(tiny_checkpoint, 8, "cuda", torch_precision="fp16", channels_last=True))
    graphed = TorchBackend(BackendConfig(tiny_checkpoint, 8, "cuda", True, "fp16", channels_last=True))
    with eager, graphed:
        assert "CUDA graph" in graphed.describe()
        kept = []
        for n, seed in ((8, 0), (3, 1), (8, 2), (3, 3)):  # sizes alternate: graphs share one memory pool
            batch = _batch(n, seed)
            out = graphed.infer(batch)
            kept.append((out, eager.infer(batch)))
        for out, reference in kept:  # earlier results are copies, not views of reused buffers
            for name in reference:
                np.testing.assert_allclose(out[name], reference[name], atol=1e-3)


def test_cli_flags_reach_the_torch_backend_and_are_refused_for_onnx(tiny_checkpoint: Path, tiny_onnx: Path,
                                                                    tmp_path: Path) -> None:
    from test_runtime_support import hep2edge, write_pngs

    image = str(write_pngs(tmp_path / "in", 1, (TILE, TILE + 8))[0])
    flags = ["--torch-precision", "fp16", "--channels-last", "--device", "cpu"]
    ran = hep2edge("analyze", image, "--model", str(tiny_checkpoint), "--out", str(tmp_path / "a"), *flags,
                   cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "fp16, channels_last" in ran.stdout
    assert "torch_precision: fp16" in (tmp_path / "a" / "config.yaml").read_text()
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "a").glob("*.json")]
    assert doc["model"]["precision"] == "fp16" and doc["model"]["backend"] == "torch"
    refused = hep2edge("analyze", image, "--model", str(tiny_onnx), "--out", str(tmp_path / "b"), *flags,
                       cwd=tmp_path)
    assert refused.returncode == 2 and "apply to a checkpoint" in refused.stderr
    assert "Traceback" not in refused.stderr
