"""Everything decided before the TensorRT builder runs: which ONNX, which profile, where files go.

Importable and testable without TensorRT. `model.fp16.onnx` -> `model.fp16.engine` + `model.fp16.engine.json`,
one `timing.cache` shared by the engines of a folder (read before a build, written after).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hep2edge import __version__
from hep2edge.contract import INPUT_NAME, ModelContract, file_sha256, model_file_name
from hep2edge.export.config import BatchProfile

TIMING_CACHE = "timing.cache"
SIDECAR_SCHEMA = "hep2edge-engine"


@dataclass(frozen=True)
class EnginePlan:
    """One engine build: its source ONNX, contract, optimization profile, workspace and file paths."""

    onnx_path: Path
    contract: ModelContract
    batch: BatchProfile
    workspace_gib: float
    engine_path: Path
    timing_cache_path: Path

    @property
    def precision(self) -> str:
        return self.contract.precision

    @property
    def sidecar_path(self) -> Path:
        return self.engine_path.with_name(self.engine_path.name + ".json")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))

    def profile(self) -> dict[str, dict[str, list[int]]]:
        """{'image': {'min': [N,C,t,t], 'opt': [...], 'max': [...]}}: profile 0, batches of tiles."""
        shapes = self.batch.shapes(self.contract.channels, self.contract.tile)
        return {INPUT_NAME: {name: list(shape) for name, shape in shapes.items()}}

    def field_profile(self) -> dict[str, dict[str, list[int]]] | None:
        """Profile 1 of a whole-field model: one field, a tile up to the field size; None when there is none."""
        contract = self.contract
        shapes = self.batch.field_shapes(contract.channels, contract.tile, contract.field_stride or 1)
        if shapes is None or not contract.whole_field:
            return None
        return {INPUT_NAME: {name: list(shape) for name, shape in shapes.items()}}

    def profiles(self) -> list[dict[str, dict[str, list[int]]]]:
        """Every optimization profile, in the index order the runtime selects them by."""
        field = self.field_profile()
        return [self.profile()] + ([field] if field else [])


def engine_path_for(onnx_path: Path, precision: str, out_dir: Path | None = None) -> Path:
    """`model.<precision>.engine` in `out_dir` (default: next to the ONNX file)."""
    return Path(out_dir or Path(onnx_path).parent) / model_file_name(precision, ".engine")


def plan_engine(
    onnx_path: Path, contract: ModelContract, batch: BatchProfile, workspace_gib: float, out_dir: Path | None = None
) -> EnginePlan:
    """The plan for building `onnx_path` (whose contract says its precision)."""
    engine = engine_path_for(onnx_path, contract.precision, out_dir)
    return EnginePlan(Path(onnx_path), contract, batch, workspace_gib, engine, engine.parent / TIMING_CACHE)


def sidecar_content(
    plan: EnginePlan, tensorrt_version: str, gpu_name: str, compute_capability: str
) -> dict[str, Any]:
    """The engine's sidecar: build facts at the top level, the model contract under 'contract'."""
    return {
        "schema": SIDECAR_SCHEMA,
        "engine": plan.engine_path.name,
        "precision": plan.precision,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "strongly_typed": True,
        "profile": plan.profile(),
        "field_profile": plan.field_profile(),
        "workspace_gib": plan.workspace_gib,
        "onnx_file": plan.onnx_path.name,
        "onnx_sha256": file_sha256(plan.onnx_path),
        "timing_cache": plan.timing_cache_path.name,
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hep2edge_version": __version__,
        "contract": plan.contract.to_dict(),
    }
