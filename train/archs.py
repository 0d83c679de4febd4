"""Decoder architectures by name: the segmentation_models_pytorch models the multi-task network is built on.

Each entry says how smp is called for it: whether it takes the 5 per-stage `decoder_channels`, whether it takes
`decoder_attention_type` (`attention="scse"`) and the extra arguments that keep its encoder at 5 stages (stride
32, as the pooled heads and their 32 px `head_maps` expect). DPT is left out: smp builds it on ViT (`tu-`)
encoders only, with an encoder that returns prefix tokens besides the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import segmentation_models_pytorch as smp
from torch import nn

from hep2edge.errors import ConfigError, RegistryError
from hep2edge.registry import Registry

ATTENTIONS = ("none", "scse")
SCSE_REDUCTION = 16  # smp's SCSE squeeze ratio: a decoder stage narrower than this has no channel to squeeze to


@dataclass(frozen=True)
class ArchSpec:
    """How one smp architecture is built: its smp name, what it takes, the least tile it runs on."""

    smp_name: str
    stage_channels: bool = False  # takes decoder_channels as 5 per-stage widths
    attention: bool = False  # takes decoder_attention_type
    min_tile: int = 32
    extra: dict[str, Any] = field(default_factory=dict)


ARCHS: Registry[ArchSpec] = Registry("architecture")
ARCHS.add("unet", ArchSpec("unet", stage_channels=True, attention=True))
ARCHS.add("unetplusplus", ArchSpec("unetplusplus", stage_channels=True, attention=True))
ARCHS.add("manet", ArchSpec("manet", stage_channels=True))
ARCHS.add("linknet", ArchSpec("linknet"))
ARCHS.add("fpn", ArchSpec("fpn"))
ARCHS.add("pspnet", ArchSpec("pspnet", min_tile=64, extra={"encoder_depth": 5, "upsampling": 32}))
ARCHS.add("pan", ArchSpec("pan", min_tile=128))  # its feature pyramid attention pools the bottleneck to 1/8
ARCHS.add("deeplabv3", ArchSpec("deeplabv3"))  # dilated encoder: bottleneck at stride 8 (head_maps pools it)
ARCHS.add("deeplabv3plus", ArchSpec("deeplabv3plus"))  # bottleneck at stride 16
ARCHS.add("upernet", ArchSpec("upernet"))
ARCHS.add("segformer", ArchSpec("segformer"))


def arch_spec(name: str) -> ArchSpec:
    """The spec of `name`; one-line ConfigError listing the valid names."""
    try:
        return ARCHS.get(name)
    except RegistryError as exc:
        raise ConfigError(f"`arch` {name}: {exc}") from None


def arch_problem(name: str, attention: str | None, tile: int | None = None,
                 decoder_channels: tuple[int, ...] = ()) -> str:
    """'' when (arch, attention, tile, decoder widths) can be built, else the one-line problem."""
    if name not in ARCHS:
        return f"`arch` {name}: unknown architecture; valid names: {', '.join(ARCHS.names())}"
    spec = ARCHS.get(name)
    if (attention or "none") not in ATTENTIONS:
        return f"`attention` {attention}: valid: {', '.join(ATTENTIONS)}"
    if attention not in (None, "none") and not spec.attention:
        takes = ", ".join(n for n in ARCHS.names() if ARCHS.get(n).attention)
        return f"`attention` {attention}: only for {takes} (not {name})"
    if attention == "scse" and decoder_channels and min(decoder_channels) < SCSE_REDUCTION:
        return (f"`attention` scse squeezes channels by {SCSE_REDUCTION}: needs `decoder_channels` of at least "
                f"{SCSE_REDUCTION} each, got {list(decoder_channels)}")
    if tile is not None and tile < spec.min_tile:
        return f"`arch` {name} needs `tile` >= {spec.min_tile}, got {tile}"
    return ""


def smp_error(exc: BaseException) -> str:
    """The first line of an error smp (or timm, for `tu-` encoders) raised, at most 200 characters."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)  # KeyError's str() adds quotes
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


@cache
def encoder_problem(encoder: str) -> str | None:
    """Why smp cannot build `encoder`, in smp's own words, or None: a name of its registry is taken as is, any
    other (`tu-` timm universal encoders) is built once, without weights."""
    if encoder in smp.encoders.get_encoder_names():
        return None
    try:
        smp.encoders.get_encoder(encoder, weights=None)
    except (ValueError, KeyError, RuntimeError) as exc:  # KeyError: not smp's; RuntimeError: timm's unknown model
        return f"`encoder` {encoder}: {smp_error(exc)}"
    return None


def build_smp_model(arch: str, encoder: str, in_channels: int, classes: int, decoder_channels: tuple[int, ...],
                    attention: str | None) -> nn.Module:
    """The smp model (random weights) with `classes` output channels; ConfigError for an impossible combination."""
    problem = arch_problem(arch, attention, decoder_channels=tuple(decoder_channels))
    if problem:
        raise ConfigError(problem)
    spec = ARCHS.get(arch)
    kwargs: dict[str, Any] = dict(spec.extra)
    if spec.stage_channels:
        kwargs["decoder_channels"] = tuple(decoder_channels)
    if spec.attention and attention not in (None, "none"):
        kwargs["decoder_attention_type"] = attention
    try:
        return smp.create_model(spec.smp_name, encoder_name=encoder, encoder_weights=None,
                                in_channels=in_channels, classes=classes, **kwargs)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:  # an encoder the arch cannot use
        raise ConfigError(f"`arch` {arch} with `encoder` {encoder}: {smp_error(exc)}") from exc
