"""fp32 ONNX export: probabilities inside the graph, dynamic batch, contract in metadata_props."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from hep2edge.contract import INPUT_NAME, ModelContract
from hep2edge.export.onnx_contract import attach_contract
from hep2edge.train.model import MultiTaskUnet

OUTPUT_NAMES = ("mask", "pattern", "intensity")
DEFAULT_OPSET = 17


class ProbabilityHeads(nn.Module):
    """Wraps the training model so the graph outputs probabilities (sigmoid / softmax applied)."""

    def __init__(self, model: MultiTaskUnet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(image)
        return (
            torch.sigmoid(out["mask"]),
            torch.softmax(out["pattern"], dim=1),
            torch.sigmoid(out["intensity"]),
        )


def export_fp32_onnx(
    model: MultiTaskUnet, contract: ModelContract, path: Path, opset: int = DEFAULT_OPSET, sample_batch: int = 2
) -> onnx.ModelProto:
    """Export `model` to `path` (fp32, dynamic batch) and return the loaded, contract-carrying proto."""
    model = model.eval()
    wrapper = ProbabilityHeads(model).eval()
    sample = torch.zeros(sample_batch, contract.channels, contract.tile, contract.tile)
    dynamic = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
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
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    attach_contract(proto, contract.with_precision("fp32"))
    onnx.save(proto, str(path))
    return proto
