"""fp32 ONNX export: probabilities inside the graph, dynamic batch, height and width, contract in metadata_props.

Outputs: mask, pattern, intensity (what tile mode reads) and the heads' logit maps (what whole-field mode
pools over each tile's region); a tile-size input gives the same three outputs as before.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from hep2edge.contract import CELL_OUTPUTS, FIELD_OUTPUTS, INPUT_NAME, OUTPUTS, ModelContract
from hep2edge.export.onnx_contract import attach_contract
from hep2edge.train.activations import activate
from hep2edge.train.model import MultiTaskUnet

OUTPUT_NAMES: tuple[str, ...] = tuple(OUTPUTS)  # what verification compares
SPATIAL_AXES = {**{name: {2: "height", 3: "width"} for name in ("mask", *CELL_OUTPUTS)},
                **{name: {2: "cells_h", 3: "cells_w"} for name in FIELD_OUTPUTS}}
DEFAULT_OPSET = 17


class ProbabilityHeads(nn.Module):
    """Wraps the training model so the graph outputs probabilities (sigmoid / softmax applied)."""

    def __init__(self, model: MultiTaskUnet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """In `graph_outputs` order; the field maps stay logits (a region's mean is activated on the host)."""
        out = self.model(image, maps=True)
        return tuple(activate(name, out[name]) for name in graph_outputs(self.model))


def graph_outputs(model: MultiTaskUnet) -> tuple[str, ...]:
    """The exported graph's outputs: mask, pattern, intensity, the field maps, then the model's dense heads."""
    return (*OUTPUT_NAMES, *FIELD_OUTPUTS, *cell_outputs(model))


def cell_outputs(model: MultiTaskUnet) -> tuple[str, ...]:
    """The per-cell dense heads (CELL_OUTPUTS names) this model was trained with."""
    dense = {name for name, _ in model.config.dense_outputs()}
    return tuple(name for name in CELL_OUTPUTS if name in dense)


def graph_contract(contract: ModelContract, model: MultiTaskUnet) -> ModelContract:
    """The contract of `model`'s exported fp32 graph: the field outputs, and the dense heads it was trained with."""
    return contract.with_precision("fp32").with_field_outputs().with_cell_outputs(cell_outputs(model))


def export_fp32_onnx(
    model: MultiTaskUnet, contract: ModelContract, path: Path, opset: int = DEFAULT_OPSET, sample_batch: int = 2
) -> onnx.ModelProto:
    """Export `model` to `path` (fp32, dynamic batch and size) and return the loaded, contract-carrying proto."""
    model = model.eval()
    wrapper = ProbabilityHeads(model).eval()
    sample = torch.zeros(sample_batch, contract.channels, contract.tile, contract.tile)
    names = graph_outputs(model)
    dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
               **{name: {0: "batch", **SPATIAL_AXES.get(name, {})} for name in names}}
    path = Path(path)
    # The TorchScript exporter (dynamo=False) is deprecated in torch 2.9+ but gives the plain, well-tested
    # graph that ModelOpt and TensorRT parse; silence its deprecation notices only.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            wrapper,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(names),
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    attach_contract(proto, graph_contract(contract, model))
    onnx.save(proto, str(path))
    return proto
