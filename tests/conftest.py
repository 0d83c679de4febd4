"""Shared fixtures: tiny models and small synthetic datasets, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGH_ANA = REPO.parent / "shared" / "data" / "agh-ana"

TINY_ENCODER = "resnet18"
TINY_DECODER = (32, 16, 16, 8, 8)
TINY_TILE = 64

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def agh_ana() -> Path:
    """The 25 real HEp-2 IIF fields shipped in ../shared/data/agh-ana (skip if absent)."""
    if not (AGH_ANA / "images").is_dir():
        pytest.skip(f"real images not found at {AGH_ANA}")
    return AGH_ANA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny multi-task model saved as a hep2edge checkpoint (tile 64)."""
    pytest.importorskip("torch")
    import torch

    from hep2edge.contract import ModelContract
    from hep2edge.train.checkpoint import make_checkpoint, save_checkpoint
    from hep2edge.train.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=TINY_ENCODER, decoder_channels=TINY_DECODER, dropout=0.0))
    contract = ModelContract(tile=TINY_TILE, encoder=TINY_ENCODER)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, make_checkpoint(model.eval(), contract, fold=0, epoch=0, metrics={}))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to fp32 ONNX with its contract."""
    pytest.importorskip("onnx")
    from hep2edge.export.onnx_export import export_fp32_onnx
    from hep2edge.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_fp32_onnx(loaded.model, loaded.contract, path)
    return path


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic I3A-format dataset: 7 patients x 2 images of 192 x 256."""
    from hep2edge.synth.writer import SynthConfig, synthesize_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize_dataset(SynthConfig(out=out, patients=7, images_per_patient=2, size=(192, 256), seed=1))
    return out


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest useful training set: 7 patients x 2 images of 128 x 128 (4 tiles of 64 each)."""
    from hep2edge.synth.writer import SynthConfig, synthesize_dataset

    out = tmp_path_factory.mktemp("synth_tiny") / "data"
    synthesize_dataset(SynthConfig(out=out, patients=7, images_per_patient=2, size=(128, 128), seed=2))
    return out
