"""The TensorRT runtime path end to end (engines, CUDA graph, CUDA preprocessing in the pipeline threads).

Only where TensorRT, pycuda and a GPU exist; skipped with the reason elsewhere. The numpy twins of every GPU
step are tested everywhere (test_runtime_preprocess.py); the interface checks shared by every backend are in
test_runtime_backends.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_support import hep2edge, random_batch, write_pngs

from hep2edge.runtime.backends import BackendConfig, create_backend, is_available

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.gpu,
    pytest.mark.skipif(not is_available("tensorrt"), reason="needs TensorRT, pycuda and a GPU"),
]
TILE = 64


def build(onnx_path: Path, out: Path, batch: tuple[int, int, int]) -> Path:
    from hep2edge.export.config import BatchProfile
    from hep2edge.export.onnx_contract import load_checked
    from hep2edge.export.tensorrt.build import build_engine
    from hep2edge.export.tensorrt.plan import plan_engine

    plan = plan_engine(onnx_path, load_checked(onnx_path)[1], BatchProfile(*batch), 1.0, out)
    return build_engine(plan, say=lambda _: None).engine_path


def test_fixed_batch_engine_runs_short_batches_padded(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = build(tiny_onnx, tmp_path, (4, 4, 4))
    batch = random_batch(4, seed=0)
    with create_backend("tensorrt", BackendConfig(engine, max_batch=8, device="cuda")) as backend:
        assert backend.max_batch == 4  # the engine's profile caps the configured 8
        full = backend.infer(batch)
        one = backend.infer(batch[1:2])  # below the profile minimum: run padded to 4
    for name in full:
        assert one[name].shape[0] == 1
        np.testing.assert_allclose(one[name], full[name][1:2], atol=1e-4)


def test_cuda_graph_replay_matches_eager(tiny_onnx: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("CUDA graphs need cuda.bindings (cuda-python)")
    engine = build(tiny_onnx, tmp_path, (1, 4, 4))
    # capture, a short eager batch, replay
    batches = [random_batch(4, seed=1), random_batch(2, seed=2), random_batch(4, seed=3)]
    with create_backend("tensorrt", BackendConfig(engine, 4, "cuda")) as eager:
        want = [eager.infer(b) for b in batches]
    with create_backend("tensorrt", BackendConfig(engine, 4, "cuda", cuda_graph=True)) as graphed:
        got = [graphed.infer(b) for b in batches]
    for expected, actual in zip(want, got):
        for name in expected:
            np.testing.assert_allclose(actual[name], expected[name], atol=1e-5)


def _results(out: Path) -> dict[str, tuple[dict[str, float], np.ndarray]]:
    found = {}
    for path in sorted(out.glob("*.json")):
        if path.name.startswith("."):
            continue
        result = json.loads(path.read_text())
        mask = cv2.imread(str(out / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        found[path.stem] = (result["pattern"]["probabilities"], mask)
    return found


def _same_results(runs: dict[str, dict[str, tuple[dict[str, float], np.ndarray]]], images: list[Path]) -> None:
    """The CUDA-preprocessed run gave every image the host run's masks (threshold ties aside) and verdicts."""
    assert sorted(runs["cuda"]) == sorted(p.stem for p in images)
    for stem, (probabilities, mask) in runs["cuda"].items():
        host_probabilities, host_mask = runs["host"][stem]
        assert mask.shape == host_mask.shape
        assert np.count_nonzero(mask != host_mask) <= mask.size // 1000  # only pixels sitting on the threshold
        for name, value in probabilities.items():
            assert value == pytest.approx(host_probabilities[name], abs=1e-4)


def test_pipeline_with_cuda_preprocessing_matches_host_preprocessing(tiny_onnx: Path, tmp_path: Path) -> None:
    """analyze in its threads: the GPU thread (not the one that activated the engine) cuts tiles on the GPU,
    frames of odd sizes span batches, and the results equal the numpy-preprocessed run's."""
    engine = build(tiny_onnx, tmp_path / "engine", (1, 4, 4))
    images = write_pngs(tmp_path / "in", 5, shape=(90, 121), seed=11)  # 2 x 2 tiles of 64, padded nowhere
    images += write_pngs(tmp_path / "in", 2, shape=(37, 50), seed=12, prefix="small")  # one padded tile
    runs = {}
    for preprocess in ("cuda", "host"):
        out = tmp_path / preprocess
        result = hep2edge("analyze", str(tmp_path / "in"), "--model", str(engine), "--backend", "tensorrt",
                          "--preprocess", preprocess, "--max-batch", "4", "--out", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        runs[preprocess] = _results(out)
    _same_results(runs, images)


def test_whole_fields_with_cuda_preprocessing_match_host_preprocessing(tiny_onnx: Path, tmp_path: Path) -> None:
    """`--inference field` on the engine's field profile: the raw field padded and normalised by the CUDA kernel
    (and its mask thresholded on the GPU) gives the host path's results; a field smaller than a tile runs in tiles."""
    engine = build(tiny_onnx, tmp_path / "engine", (1, 4, 4))
    images = write_pngs(tmp_path / "in", 3, shape=(150, 203), seed=13)  # padded to 160 x 224
    images += write_pngs(tmp_path / "in", 1, shape=(37, 300), seed=14, prefix="small")  # 5 tiles, 2 batches
    runs = {}
    for preprocess in ("cuda", "host"):
        out = tmp_path / preprocess
        result = hep2edge("analyze", str(tmp_path / "in"), "--model", str(engine), "--backend", "tensorrt",
                          "--inference", "field", "--preprocess", preprocess, "--max-batch", "4", "--out", str(out),
                          cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        runs[preprocess] = _results(out)
    _same_results(runs, images)
