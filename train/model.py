"""The multi-task U-Net: an smp model (U-Net by default, `arch`) for the mask plus two small pooled heads
(pattern, intensity), and optional dense heads (distance map, pattern map) on the same decoder.

The pooled heads pool bottleneck features (optionally the last few encoder stages), so they hold a few
thousand parameters and accept any input size divisible by 32. The dense heads are extra output channels of
the smp segmentation head (mask = channel 0, then distance, then the 8 pattern-map channels), so any
architecture carries them and a model without them has exactly the weights of one built before they existed.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from hep2edge.errors import ConfigError
from hep2edge.labels import PATTERNS
from hep2edge.train.archs import build_smp_model, encoder_problem
from hep2edge.train.settings import DEFAULT_ENCODER

PATTERN_MAP_CLASSES = ("background", *PATTERNS)  # the pattern map's channels, in order


@dataclass(frozen=True)
class ModelConfig:
    """Architecture arguments; stored in every checkpoint so export needs nothing else."""

    encoder: str = DEFAULT_ENCODER
    in_channels: int = 1
    num_patterns: int = len(PATTERNS)
    pool_levels: int = 1  # 1 = bottleneck only; k = concat of the last k encoder stages, pooled
    dropout: float = 0.3
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # used by unet, unetplusplus, manet only
    arch: str = "unet"  # a hep2edge.train.archs.ARCHS name
    attention: str | None = None  # "scse" (unet, unetplusplus) or None
    distance: bool = False  # dense head "distance": (N,1,H,W) logits, sigmoid = distance to background / cell max
    pattern_map: bool = False  # dense head "pattern_map": (N,8,H,W) logits, background + PATTERNS

    def dense_outputs(self) -> tuple[tuple[str, int], ...]:
        """(output key, channels) of the segmentation head's channels, in order: mask first, 1 + 1 + 8 at most."""
        heads = [("mask", 1)] + [("distance", 1)] * self.distance
        return (*heads, *[("pattern_map", len(PATTERN_MAP_CLASSES))] * self.pattern_map)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        fields = dict(data)
        fields["decoder_channels"] = tuple(fields.get("decoder_channels", cls.decoder_channels))
        return cls(**fields)


class MultiTaskUnet(nn.Module):
    """(N, C, H, W) -> {"mask": (N,1,H,W) logits, "pattern": (N,7) logits, "intensity": (N,1) logit}.

    With the dense heads on, also "distance" (N,1,H,W) logits and "pattern_map" (N,8,H,W) logits.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        problem = encoder_problem(config.encoder)
        if problem:
            raise ConfigError(problem)
        if not 1 <= config.pool_levels <= 5:
            raise ConfigError(f"pool_levels must be 1-5, got {config.pool_levels}")
        self.config = config
        classes = sum(channels for _, channels in config.dense_outputs())
        self.unet = build_smp_model(config.arch, config.encoder, config.in_channels, classes,
                                    config.decoder_channels, config.attention)
        pooled = sum(self.unet.encoder.out_channels[-config.pool_levels :])
        self.pattern_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(pooled, config.num_patterns))
        self.intensity_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(pooled, 1))
        self._shared_name: str | None = None
        self._pool_kernels = pool_kernels(self.unet.encoder, config.pool_levels)

    def last_shared_layer(self) -> nn.Parameter:
        """The weight GradNorm measures task gradients on: the last weight the encoder's forward uses.

        Found once by tracing the forward: registration order is not execution order, and some smp
        encoders keep layers their forward never calls (EfficientNet's `_conv_head`), whose gradient is 0.
        """
        if self._shared_name is None:
            self._shared_name = "unet.encoder." + last_used_weight(self.unet.encoder, self.config.in_channels)
        return self.get_parameter(self._shared_name)

    def forward(self, x: torch.Tensor, maps: bool = False) -> dict[str, torch.Tensor]:
        """`maps`: also the heads as logit maps over 32 px cells (`head_maps`), for whole-field inference."""
        features = self.unet.encoder(x)
        dense = self.split_dense(self.unet.segmentation_head(self.unet.decoder(features)))
        pooled = torch.cat(
            [F.adaptive_avg_pool2d(f, 1).flatten(1) for f in features[-self.config.pool_levels :]], dim=1
        )
        out = {"mask": dense.pop("mask"), "pattern": self.pattern_head(pooled),
               "intensity": self.intensity_head(pooled), **dense}
        return {**out, **self.head_maps(features)} if maps else out

    def split_dense(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 1[+1][+8], H, W) segmentation-head logits -> {"mask", ["distance"], ["pattern_map"]}."""
        outputs = self.config.dense_outputs()
        if len(outputs) == 1:
            return {"mask": logits}  # no slice: the graph of a mask-only model stays as it was
        parts: dict[str, torch.Tensor] = {}
        start = 0
        for name, channels in outputs:
            parts[name] = logits[:, start : start + channels]
            start += channels
        return parts

    def head_maps(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(N, 7, H/32, W/32) pattern and (N, 1, H/32, W/32) intensity logits, one per 32 px cell.

        The heads' linear layers as 1x1 convolutions over the pooled levels brought to stride 32; pooling and
        the layers are linear, so the mean of a map over a region is the head applied to that region's pool.
        """
        levels = features[-self.config.pool_levels :]
        cells = torch.cat([F.avg_pool2d(f, k) if k > 1 else f for k, f in zip(self._pool_kernels, levels)], dim=1)
        return {"pattern_logits": _as_conv(cells, self.pattern_head[-1]),
                "intensity_logits": _as_conv(cells, self.intensity_head[-1])}


def pool_kernels(encoder: nn.Module, levels: int) -> tuple[int, ...]:
    """Average-pool kernel that brings each of the last `levels` encoder features to stride 32.

    Level i of a depth-d encoder has stride min(2**i, output stride): 32, 16, ... for U-Net encoders;
    dilated ones (DeepLabV3: 8, DeepLabV3+: 16) stop early. Fixed numbers, so exported graphs hold constants.
    """
    depth = int(getattr(encoder, "_depth", 5))
    stride = int(getattr(encoder, "output_stride", 32))
    return tuple(32 // min(2**i, stride) for i in range(depth - levels + 1, depth + 1))


def _as_conv(cells: torch.Tensor, linear: nn.Module) -> torch.Tensor:
    """A Linear(C, K) applied at every position of (N, C, h, w): (N, K, h, w)."""
    assert isinstance(linear, nn.Linear)
    return F.conv2d(cells, linear.weight[:, :, None, None], linear.bias)


def last_used_weight(encoder: nn.Module, in_channels: int, size: int = 64) -> str:
    """Name of the last weight tensor (dim > 1) used by `encoder`'s forward, traced on a zero input.

    Eval mode and no_grad: running statistics and random streams are left untouched.
    """
    order: list[str] = []
    hooks = []
    for name, module in encoder.named_modules():
        if any(p.dim() > 1 and p.requires_grad for p in module.parameters(recurse=False)):
            hooks.append(module.register_forward_hook(lambda *_, name=name: order.append(name)))
    training = encoder.training
    device = next(encoder.parameters()).device
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(torch.zeros(1, in_channels, size, size, device=device))
    finally:
        encoder.train(training)
        for hook in hooks:
            hook.remove()
    module = encoder.get_submodule(order[-1])
    weight = [n for n, p in module.named_parameters(recurse=False) if p.dim() > 1 and p.requires_grad][-1]
    return f"{order[-1]}.{weight}" if order[-1] else weight


def _online(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _imagenet_encoder_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The encoder's ImageNet weights from smp's hub; one-line ConfigError when there are none or no network."""
    settings = smp.encoders.encoders.get(config.encoder, {}).get("pretrained_settings", {"imagenet": None})
    if "imagenet" not in settings:
        raise ConfigError(f"`encoder_weights` imagenet: encoder '{config.encoder}' has no ImageNet weights in "
                          f"segmentation_models_pytorch (it has: {', '.join(settings) or 'none'}); "
                          "pass `encoder_weights` none or PATH")
    if not _online():
        raise ConfigError(
            "`encoder_weights` imagenet needs a download and this machine is offline; "
            "download the encoder's state dict elsewhere and pass `encoder_weights` PATH"
        )
    try:
        reference = smp.Unet(config.encoder, encoder_weights="imagenet", in_channels=config.in_channels)
    except Exception as exc:  # hub and network errors come in many types
        problem = f"could not get the weights of '{config.encoder}' ({exc.__class__.__name__})"
        raise ConfigError(f"`encoder_weights` imagenet: {problem}; "
                          "download them elsewhere and pass `encoder_weights` PATH") from exc
    return reference.encoder.state_dict()


def load_encoder_weights(model: MultiTaskUnet, weights: str | None) -> str:
    """Initialise the encoder from `none`, `imagenet` or a local file; returns what was used."""
    if weights in (None, "", "none"):
        return "none"
    if weights == "imagenet":
        model.unet.encoder.load_state_dict(_imagenet_encoder_state(model.config))
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"`encoder_weights` {weights}: no such file (use none, imagenet or a .pth path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ConfigError(f"{path}: not a readable torch state dict ({exc.__class__.__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds no state dict (a mapping of tensor names to tensors)")
    matched = matching_encoder_tensors(model.unet.encoder, state)
    if not matched:
        raise ConfigError(f"{path}: no tensor matches encoder '{model.config.encoder}'")
    # nn.Module's own loader: smp encoders override load_state_dict (some drop `strict`, most return None)
    nn.Module.load_state_dict(model.unet.encoder, matched, strict=False)
    return str(path)


def matching_encoder_tensors(encoder: nn.Module, state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of `state` whose name and shape fit `encoder`; a 3-channel first conv is summed to 1 channel."""
    own = encoder.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name not in own or not isinstance(tensor, torch.Tensor):
            continue
        target = own[name]
        if tensor.shape != target.shape and tensor.dim() == 4 and target.shape[1] == 1 and tensor.shape[1] == 3:
            tensor = tensor.sum(dim=1, keepdim=True)  # as smp adapts ImageNet weights to 1 input channel
        if tensor.shape == target.shape:
            matched[name] = tensor
    return matched


def build_model(config: ModelConfig, encoder_weights: str | None = None) -> MultiTaskUnet:
    """A MultiTaskUnet with its encoder initialised as asked."""
    model = MultiTaskUnet(config)
    load_encoder_weights(model, encoder_weights)
    return model
