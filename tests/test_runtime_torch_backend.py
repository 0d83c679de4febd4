"""The torch backend: fp16, channels_last, CUDA graphs, and its device path (tiles and masks on the GPU);
GPU tests skip without one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_support import check_exactly_once, hep2edge, random_batch, write_pngs

from hep2edge.errors import ConfigError
from hep2edge.runtime.backends import BackendConfig, create_backend

torch = pytest.importorskip("torch")
from hep2edge.runtime.backends.torch_backend import TorchBackend, TorchOptions  # noqa: E402

TILE = 64


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
    with pytest.raises(ConfigError, match="`torch_precision` int8: valid: fp32, fp16"):
        BackendConfig(tiny_checkpoint, torch_precision="int8")


def test_fp16_channels_last_matches_fp32(tiny_checkpoint: Path) -> None:
    batch = random_batch(3)
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
            batch = random_batch(n, seed)
            out = graphed.infer(batch)
            kept.append((out, eager.infer(batch)))
        for out, reference in kept:  # earlier results are copies, not views of reused buffers
            for name in reference:
                np.testing.assert_allclose(out[name], reference[name], atol=1e-3)


def test_cli_flags_reach_the_torch_backend_and_are_refused_for_onnx(tiny_checkpoint: Path, tiny_onnx: Path,
                                                                    tmp_path: Path) -> None:
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
    bad = hep2edge("analyze", image, "--model", str(tiny_checkpoint), "--out", str(tmp_path / "c"),
                   "--torch-precision", "fp8", cwd=tmp_path)
    assert bad.returncode == 2 and "--torch-precision fp8: valid: fp32, fp16" in bad.stderr
    assert "resolved" not in bad.stdout  # refused before anything runs
    assert "Traceback" not in refused.stderr


# --- the device path: tiles cut and masks thresholded by torch on the backend's device -----------------------


def _frames(dtype: type) -> list[np.ndarray]:
    rng = np.random.default_rng()
    return [rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype) for shape in ((157, 203), (31, 45), (64, 129))]


def _device(name: str) -> Any:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device(name)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("mode", ["fixed", "minmax"])
def test_device_tiles_are_bit_identical_to_numpy(dtype: type, mode: str, device: str) -> None:
    from hep2edge.contract import ModelContract
    from hep2edge.normalization import NormalizationSpec, dtype_scale
    from hep2edge.runtime.backends.torch_backend_executor import TorchTiler
    from hep2edge.runtime.preprocess import frame_to_batch

    contract = ModelContract(tile=TILE, normalization=NormalizationSpec(mode, mean=0.2, std=0.7))
    tiler = TorchTiler(contract, _device(device))
    for gray in _frames(dtype):
        expected, grid = frame_to_batch(gray, contract)
        frame = tiler.upload(gray)
        half = len(grid) // 2  # as the pipeline cuts it when a frame spans two batches
        got = torch.cat([tiler.tiles(frame, grid, 0, half, dtype_scale(gray.dtype)),
                         tiler.tiles(frame, grid, half, len(grid), dtype_scale(gray.dtype))])
        np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_device_threshold_is_bit_identical_to_numpy(dtype: Any, device: str) -> None:
    from hep2edge.runtime.backends.torch_backend_executor import threshold_on_device
    from hep2edge.runtime.preprocess import threshold_masks

    probs = torch.rand((5, 1, TILE, TILE)).to(dtype)
    probs.view(-1)[::97] = 0.5  # exactly at the threshold
    got = threshold_on_device(probs.to(_device(device)), 0.5)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.cpu().numpy(), threshold_masks(probs.numpy(), 0.5))


def test_tile_indices_are_kept_for_the_latest_frame_sizes_only() -> None:
    from hep2edge.contract import ModelContract
    from hep2edge.runtime.backends.torch_backend_executor import INDEX_CACHE_SIZES, TorchTiler
    from hep2edge.tiling import tile_grid

    tiler = TorchTiler(ModelContract(tile=TILE), torch.device("cpu"))
    for width in range(TILE, TILE + INDEX_CACHE_SIZES + 5):
        gray = np.zeros((TILE, width), np.uint8)
        grid = tile_grid(TILE, width, TILE)
        tiler.tiles(tiler.upload(gray), grid, 0, len(grid), 255.0)
    assert len(tiler._indices) == INDEX_CACHE_SIZES
    assert (TILE, TILE + INDEX_CACHE_SIZES + 4) in tiler._indices and (TILE, TILE) not in tiler._indices
    tiler.clear()
    assert not tiler._indices


def test_outputs_off_the_contract_are_refused_on_the_device_path() -> None:
    from hep2edge.contract import ModelContract
    from hep2edge.errors import ContractError
    from hep2edge.runtime.backends.base import check_output_shapes

    contract = ModelContract(tile=TILE)
    good = {"mask": torch.zeros(3, 1, TILE, TILE), "pattern": torch.zeros(3, 7), "intensity": torch.zeros(3, 1)}
    check_output_shapes(good, 3, contract)
    with pytest.raises(ContractError, match="model output 'pattern' is \\(3, 6\\)"):
        check_output_shapes({**good, "pattern": torch.zeros(3, 6)}, 3, contract)


def _chunks(contract: object, frames: list[np.ndarray], host: bool) -> list[object]:
    """Two frames in one batch, the second split across two chunks (its two halves)."""
    from hep2edge.runtime.executors import Chunk
    from hep2edge.runtime.preprocess import frame_to_batch

    chunks = []
    for key, gray in enumerate(frames):
        tiles, grid = frame_to_batch(gray, contract)
        cuts = [(0, len(grid))] if key == 0 else [(0, len(grid) // 2), (len(grid) // 2, len(grid))]
        chunks += [Chunk(key, gray, grid, a, b, tiles[a:b] if host else None) for a, b in cuts]
    return chunks


def _device_matches_host(checkpoint: Path, device: str, cuda_graph: bool) -> None:
    from hep2edge.runtime.backends.torch_backend_executor import TorchDeviceExecutor
    from hep2edge.runtime.executors import HostExecutor

    frames = [np.random.default_rng(4).integers(0, 255, shape, dtype=np.uint8) for shape in ((100, 150), (130, 90))]
    with TorchBackend(BackendConfig(checkpoint, 16, device, cuda_graph)) as backend:
        want = HostExecutor(backend).run(_chunks(backend.contract, frames, host=True))
        got = TorchDeviceExecutor(backend).run(_chunks(backend.contract, frames, host=False))
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert g.mask.dtype == np.uint8 and g.mask.shape == w.mask.shape
        assert np.mean(g.mask != w.mask) < 1e-4  # same inputs, same model: only ties at the threshold may differ
        np.testing.assert_allclose(g.pattern, w.pattern, atol=1e-5)
        np.testing.assert_allclose(g.intensity, w.intensity, atol=1e-5)


def test_device_executor_matches_the_host_path_on_the_cpu(tiny_checkpoint: Path) -> None:
    _device_matches_host(tiny_checkpoint, "cpu", cuda_graph=False)


@pytest.mark.gpu
def test_device_executor_matches_the_host_path_on_the_gpu(tiny_checkpoint: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _device_matches_host(tiny_checkpoint, "cuda", cuda_graph=True)


def test_executor_choice_for_a_checkpoint(tiny_checkpoint: Path) -> None:
    from hep2edge.runtime.executors import HostExecutor, make_executor

    with TorchBackend(BackendConfig(tiny_checkpoint, 4, "cpu")) as backend:
        assert isinstance(make_executor(backend, "auto"), HostExecutor)  # on the CPU the readers cut the tiles
        with pytest.raises(ConfigError, match="`preprocess` cuda needs a GPU"):
            make_executor(backend, "cuda")


def _host_and_device_runs(make_config: Callable[[Path], Any], inputs: list[Path], executor: Callable[[Any], Any],
                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result documents of a run preprocessed on the host and of one with `executor` (chosen by hand here:
    make_executor picks the device executors only on a GPU)."""
    import io

    from rich.console import Console

    from hep2edge.cli.reporter import RichReporter
    from hep2edge.runtime import service
    from hep2edge.runtime.sources.files import FileListSource

    def analyse(out: Path) -> dict[str, Any]:
        out.mkdir()
        summary = service.run_service(make_config(out), lambda journal: FileListSource(inputs),
                                      RichReporter(Console(file=io.StringIO())))
        assert summary.processed == len(inputs) and not summary.failed
        check_exactly_once(out, inputs)
        return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}

    on_host = analyse(tmp_path / "host")
    monkeypatch.setattr(service, "make_executor", lambda backend, *_: executor(backend))
    return on_host, analyse(tmp_path / "device")


def _same_verdicts(on_host: dict[str, Any], on_device: dict[str, Any]) -> None:
    assert on_device.keys() == on_host.keys()
    for stem, doc in on_host.items():
        assert on_device[stem]["pattern"]["top"] == doc["pattern"]["top"]
        assert on_device[stem]["pattern"]["probabilities"] == pytest.approx(doc["pattern"]["probabilities"], abs=1e-5)


def test_device_path_through_the_whole_pipeline(tiny_checkpoint: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers hand on frames without host tiles, batches span frames, writers get uint8 masks."""
    from hep2edge.runtime.backends.torch_backend_executor import TorchDeviceExecutor
    from hep2edge.runtime.settings import PipelineConfig, RunConfig

    inputs = write_pngs(tmp_path / "in", 6, shape=(100, 150))  # 6 tiles each; max batch 5 splits every frame
    on_host, on_device = _host_and_device_runs(
        lambda out: RunConfig(command="analyze", out=out, model=tiny_checkpoint, backend="torch", device="cpu",
                              pipeline=PipelineConfig(max_batch=5)), inputs, TorchDeviceExecutor, tmp_path, monkeypatch)
    _same_verdicts(on_host, on_device)
    for path in (tmp_path / "host").glob("*_mask.png"):
        assert path.read_bytes() == (tmp_path / "device" / path.name).read_bytes()


# --- whole fields on the device: the raw frame goes up, padded and normalised there ------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_device_field_input_is_bit_identical_to_numpy(dtype: type, device: str) -> None:
    from hep2edge.contract import ModelContract
    from hep2edge.normalization import NormalizationSpec, dtype_scale
    from hep2edge.runtime.backends.torch_backend_executor import TorchTiler
    from hep2edge.runtime.field import field_input

    spec = NormalizationSpec("fixed", mean=0.2, std=0.7)
    contract = ModelContract(tile=TILE, normalization=spec).with_field_outputs()
    tiler = TorchTiler(contract, _device(device))
    for gray in _frames(dtype):
        got = tiler.field(tiler.upload(gray), *gray.shape, dtype_scale(gray.dtype))
        np.testing.assert_array_equal(got.cpu().numpy(), field_input(gray, contract))  # the pad too: -mean/std


def test_device_field_input_refuses_per_tile_normalisation() -> None:
    from hep2edge.contract import ModelContract
    from hep2edge.normalization import NormalizationSpec
    from hep2edge.runtime.backends.torch_backend_executor import TorchTiler

    tiler = TorchTiler(ModelContract(tile=TILE, normalization=NormalizationSpec("minmax")), torch.device("cpu"))
    with pytest.raises(ValueError, match="needs fixed normalisation"):
        tiler.field(tiler.upload(np.zeros((TILE, TILE), np.uint8)), TILE, TILE, 255.0)


def _field_chunks(contract: Any, frames: list[np.ndarray], host: bool) -> list[Any]:
    """One chunk per frame, as the readers make them in field mode (a frame smaller than a tile stays in tiles)."""
    from hep2edge.runtime.executors import Chunk
    from hep2edge.runtime.field import field_input, field_problem
    from hep2edge.runtime.preprocess import frame_to_batch

    chunks = []
    for key, gray in enumerate(frames):
        tiles, grid = frame_to_batch(gray, contract)
        whole = field_problem(*gray.shape, contract) is None
        data = (field_input(gray, contract) if whole else tiles) if host else None
        chunks.append(Chunk(key, gray, grid, 0, len(grid), data, whole))
    return chunks


def _device_field_matches_host(checkpoint: Path, device: str) -> None:
    from hep2edge.runtime.backends.torch_backend_executor import TorchFieldExecutor
    from hep2edge.runtime.executors import FieldExecutor

    rng = np.random.default_rng(6)
    frames = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((100, 150), (40, 300), (130, 90))]
    with TorchBackend(BackendConfig(checkpoint, 2, device)) as backend:  # the (40, 300) frame: 5 tiles, 3 batches
        chunks = _field_chunks(backend.contract, frames, host=True)
        want = FieldExecutor(backend).run(chunks)
        got = TorchFieldExecutor(backend).run(_field_chunks(backend.contract, frames, host=False))
    assert [c.field for c in chunks] == [True, False, True]
    for g, w in zip(got, want):
        for name in ("mask", "field_mask"):
            mine, theirs = getattr(g, name), getattr(w, name)
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert mine.dtype == np.uint8 and mine.shape == theirs.shape
                assert np.mean(mine != theirs) < 1e-4  # only ties at the threshold may differ
        np.testing.assert_allclose(g.pattern, w.pattern, atol=1e-5)
        np.testing.assert_allclose(g.intensity, w.intensity, atol=1e-5)
        assert g.dense.keys() == w.dense.keys()
        for name in g.dense:
            assert np.abs(g.dense[name].astype(int) - w.dense[name]).max() <= 1


def test_device_field_executor_matches_the_host_path_on_the_cpu(tiny_checkpoint: Path) -> None:
    _device_field_matches_host(tiny_checkpoint, "cpu")


@pytest.mark.gpu
def test_device_field_executor_matches_the_host_path_on_the_gpu(tiny_checkpoint: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _device_field_matches_host(tiny_checkpoint, "cuda")


def test_executor_choice_for_whole_fields(tiny_checkpoint: Path, tiny_onnx: Path) -> None:
    from hep2edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from hep2edge.runtime.executors import FieldExecutor, make_executor

    with TorchBackend(BackendConfig(tiny_checkpoint, 4, "cpu")) as backend:
        assert isinstance(make_executor(backend, "auto", "field"), FieldExecutor)  # CPU: the readers pad fields
        with pytest.raises(ConfigError, match="`preprocess` cuda needs a GPU"):
            make_executor(backend, "cuda", "field")
    with OnnxRuntimeBackend(BackendConfig(tiny_onnx, 4, "cpu")) as onnx_backend, \
            pytest.raises(ConfigError, match="onnxruntime backend preprocesses whole fields on the host"):
        make_executor(onnx_backend, "cuda", "field")


def test_device_field_path_through_the_whole_pipeline(tiny_checkpoint: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers hand on whole frames without a host field input; the results match the host field path."""
    from hep2edge.runtime.backends.torch_backend_executor import TorchFieldExecutor
    from hep2edge.runtime.settings import RunConfig

    inputs = write_pngs(tmp_path / "in", 3, shape=(100, 150))
    on_host, on_device = _host_and_device_runs(
        lambda out: RunConfig(command="analyze", out=out, model=tiny_checkpoint, backend="torch", device="cpu",
                              inference="field"), inputs, TorchFieldExecutor, tmp_path, monkeypatch)
    assert {doc["model"]["inference"] for doc in [*on_host.values(), *on_device.values()]} == {"field"}
    _same_verdicts(on_host, on_device)
