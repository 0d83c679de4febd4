"""The model with the encoders the seeds compare, any input size, small pooled heads, encoder weights."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hep2edge.errors import ConfigError  # noqa: E402
from hep2edge.train import model as model_module  # noqa: E402
from hep2edge.train.losses import MultiTaskLoss  # noqa: E402
from hep2edge.train.model import ModelConfig, MultiTaskUnet, build_model  # noqa: E402
from hep2edge.train.weighting import task_gradient_norms  # noqa: E402

SMALL_DECODER = (32, 16, 16, 8, 8)


def _head_parameters(model: MultiTaskUnet) -> int:
    return sum(p.numel() for head in (model.pattern_head, model.intensity_head) for p in head.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["efficientnet-b4", "resnet34", "vgg19_bn", "inceptionv4", "mobilenet_v2"])
def test_seed_encoders_build_and_give_named_outputs(encoder: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=encoder, decoder_channels=SMALL_DECODER, dropout=0.0))
    out = model(torch.rand(2, 1, 64, 64))
    assert out["mask"].shape == (2, 1, 64, 64)
    assert out["pattern"].shape == (2, 7) and out["intensity"].shape == (2, 1)
    assert _head_parameters(model) < 20_000, "pooled heads hold a few thousand parameters"
    # GradNorm's last shared layer must be a weight every task's gradient reaches (not an unused layer)
    losses = MultiTaskLoss()(out, (torch.rand(2, 1, 64, 64) > 0.5).float(), torch.tensor([0, 3]), torch.tensor([0, 1]))
    norms = task_gradient_norms(losses, model.last_shared_layer())
    assert (norms > 0).all(), f"{encoder}: task gradients on the last shared layer are {norms.tolist()}"


def test_timm_universal_encoders_are_smps_to_accept() -> None:
    """`tu-` names smp builds through timm are accepted; a wrong one fails with smp's (timm's) one-line reason."""
    torch.set_num_threads(1)
    model = build_model(ModelConfig(encoder="tu-resnet18", decoder_channels=SMALL_DECODER, pool_levels=2))
    out = model(torch.rand(2, 1, 64, 64))
    assert out["mask"].shape == (2, 1, 64, 64) and out["pattern"].shape == (2, 7)
    assert model.last_shared_layer().requires_grad
    with pytest.raises(ConfigError, match=r"^`encoder` tu-resnet9000: Unknown model \(resnet9000\)$"):
        build_model(ModelConfig(encoder="tu-resnet9000"))
    with pytest.raises(ConfigError, match="^`encoder` resnet9000: Wrong encoder name `resnet9000`") as caught:
        build_model(ModelConfig(encoder="resnet9000"))
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 250


def test_any_input_size_three_channels_and_multiscale_pooling() -> None:
    torch.set_num_threads(1)
    model = build_model(ModelConfig(encoder="resnet18", in_channels=3, pool_levels=3,
                                    decoder_channels=SMALL_DECODER)).eval()
    with torch.no_grad():
        for size in (64, 96, 160):
            out = model(torch.zeros(2, 3, size, size))
            assert out["mask"].shape == (2, 1, size, size) and out["pattern"].shape == (2, 7)
    assert _head_parameters(model) == (512 + 256 + 128) * 8 + 8  # 7 pattern + 1 intensity logits


def test_encoder_weights_from_a_local_file(tmp_path: Path) -> None:
    source = build_model(ModelConfig(encoder="resnet18", decoder_channels=SMALL_DECODER))
    path = tmp_path / "encoder.pth"
    torch.save(source.unet.encoder.state_dict(), path)
    loaded = build_model(ModelConfig(encoder="resnet18", decoder_channels=SMALL_DECODER), str(path))
    for name, tensor in source.unet.encoder.state_dict().items():
        assert torch.equal(tensor, loaded.unet.encoder.state_dict()[name])
    rgb = build_model(ModelConfig(encoder="resnet18", in_channels=3, decoder_channels=SMALL_DECODER))
    torch.save({"state_dict": rgb.unet.encoder.state_dict()}, tmp_path / "rgb.pth")
    gray = build_model(ModelConfig(encoder="resnet18", decoder_channels=SMALL_DECODER), str(tmp_path / "rgb.pth"))
    assert torch.allclose(gray.unet.encoder.conv1.weight, rgb.unet.encoder.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(gray.unet.encoder.layer4[1].conv2.weight, rgb.unet.encoder.layer4[1].conv2.weight)
    with pytest.raises(ConfigError, match="no tensor matches encoder 'mobilenet_v2'"):
        build_model(ModelConfig(encoder="mobilenet_v2", decoder_channels=SMALL_DECODER), str(path))


def test_imagenet_offline_fails_fast_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "_online", lambda *a, **k: False)  # as on an air-gapped workstation
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(encoder="resnet18", decoder_channels=SMALL_DECODER), "imagenet")
    message = str(info.value)
    assert "offline" in message and "`encoder_weights` PATH" in message and "\n" not in message


def test_imagenet_for_an_encoder_without_imagenet_weights_says_what_it_has() -> None:
    with pytest.raises(ConfigError, match=r"encoder 'dpn68b' has no ImageNet weights .*it has: imagenet\+5k"):
        build_model(ModelConfig(encoder="dpn68b", decoder_channels=SMALL_DECODER), "imagenet")
