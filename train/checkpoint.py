"""Checkpoints hold everything export needs: architecture, contract, weights, fold, metrics, data.

Plain dicts of primitives and tensors, so `torch.load(weights_only=True)` reads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hep2edge import __version__
from hep2edge.atomic import atomic_writer
from hep2edge.contract import ModelContract
from hep2edge.errors import ContractError
from hep2edge.train.model import ModelConfig, MultiTaskUnet

FORMAT = "hep2edge-checkpoint"
FORMAT_VERSION = 1


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hash of the weights (names and values), independent of how the file was written."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()


def cell_outputs(config: ModelConfig) -> tuple[str, ...]:
    """The dense heads of a model besides its mask ("distance", "pattern_map"), as contract output names."""
    return tuple(name for name, _ in config.dense_outputs() if name != "mask")


def make_checkpoint(
    model: MultiTaskUnet, contract: ModelContract, **meta: Any
) -> dict[str, Any]:
    """The checkpoint dict for `model`; `meta` adds fold, epoch, metrics, data, ... ."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    contract = ModelContract.from_dict(
        {**contract.with_cell_outputs(cell_outputs(model.config)).to_dict(), "weights_sha256": weights_sha256(state),
         "encoder": model.config.encoder}
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hep2edge_version": __version__,
        "model": model.config.to_dict(),
        "contract": contract.to_dict(),
        "state_dict": state,
        **meta,
    }


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically (hep2edge.atomic: a killed process leaves the previous file or none, and the file gets the
    mode a plain open() would, so a second user on the workstation can export it), streamed, not buffered."""
    with atomic_writer(Path(path)) as handle:  # OutputWriteError "<path>: cannot write (<reason>)"
        torch.save(checkpoint, handle)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check a checkpoint dict; one-line ContractError for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, not a torch file at all
        raise ContractError(
            f"{path}: not a readable checkpoint (truncated or not a torch file: {exc.__class__.__name__})"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ContractError(f"{path}: not a hep2edge checkpoint (no '{FORMAT}' marker)")
    if data.get("format_version") != FORMAT_VERSION:
        raise ContractError(
            f"{path}: checkpoint format {data.get('format_version')}, this hep2edge reads {FORMAT_VERSION}"
        )
    return data


@dataclass
class LoadedCheckpoint:
    """A model ready for inference plus the checkpoint's contract and metadata."""

    model: MultiTaskUnet
    config: ModelConfig
    contract: ModelContract
    data: dict[str, Any]


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint and load its weights (eval mode)."""
    data = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(data["model"])
        # every MultiTaskUnet has the heads' maps (head_maps): older checkpoints gain whole-field inference too
        contract = ModelContract.from_dict(data["contract"], source=str(path)).with_field_outputs()
        contract = contract.with_cell_outputs(cell_outputs(config))
    except (KeyError, TypeError) as exc:
        raise ContractError(f"{path}: checkpoint lacks its architecture or contract ({exc})") from exc
    model = MultiTaskUnet(config)
    try:
        model.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise ContractError(f"{path}: weights do not fit architecture {config.encoder} ({first})") from exc
    model.to(device).eval()
    return LoadedCheckpoint(model, config, contract, data)
