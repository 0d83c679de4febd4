"""The TensorRT step of an export, and `build-engine` for the target machine.

With a real TensorRT: build `model.<precision>.engine` + sidecar for each ONNX file. Without it: say so
in one line and give the equivalent `trtexec` command lines (the ONNX files are written either way).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hep2edge.contract import ModelContract
from hep2edge.errors import MissingExtraError
from hep2edge.export.config import BatchProfile, ExportConfig
from hep2edge.export.precisions import PRECISIONS
from hep2edge.export.tensorrt.plan import EnginePlan, plan_engine
from hep2edge.export.tensorrt.probe import real_tensorrt, tensorrt_version
from hep2edge.export.tensorrt.trtexec import trtexec_command
from hep2edge.progress import SILENT

NO_TENSORRT = "TensorRT is not importable here: ONNX files written; build the engines on the target machine"


class NoTensorRT(MissingExtraError):
    """`build-engine` without TensorRT: one line naming the extra and the trtexec alternative."""

    def __init__(self, plan: EnginePlan) -> None:
        super().__init__("tensorrt", "tensorrt")
        self.args = (f"{plan.onnx_path}: TensorRT is not importable here; install it (pip install "
                     f"'hep2edge[tensorrt]') or run in {plan.onnx_path.parent}: {trtexec_command(plan)}",)


def export_plans(config: ExportConfig, out_dir: Path, contract: ModelContract) -> list[EnginePlan]:
    """One plan per written precision file of an export."""
    plans = []
    for name in config.precisions:
        path = out_dir / PRECISIONS.get(name).filename
        if path.is_file():
            plans.append(plan_engine(path, contract.with_precision(name), config.batch, config.workspace_gib))
    return plans


def engines_for(config: ExportConfig, out_dir: Path, contract: ModelContract,
                say: Callable[[str], None]) -> dict[str, Any]:
    """Build engines when asked and possible; always return the trtexec equivalents for the report."""
    plans = export_plans(config, out_dir, contract)
    info: dict[str, Any] = {"trtexec": [trtexec_command(p) for p in plans], "engines": []}
    if not config.engine:
        info["status"] = "engines not requested (--engine); build them on the target with `hep2edge build-engine`"
        return info
    if real_tensorrt() is None:
        info["status"] = NO_TENSORRT
        say(NO_TENSORRT)
        for command in info["trtexec"]:
            say(f"  cd {out_dir} && {command}")
        return info
    from hep2edge.export.tensorrt.build import build_engine

    info["status"] = f"built with TensorRT {tensorrt_version()}"
    for plan in plans:
        built = build_engine(plan, say)
        info["engines"].append(built.engine_path.name)
    return info


def build_engine_for_onnx(onnx_path: Path, batch: BatchProfile, workspace_gib: float,
                          out_dir: Path | None = None, say: Callable[[str], None] = SILENT.say) -> Path:
    """`hep2edge build-engine`: check the file's contract, then build; NoTensorRT if TensorRT is missing."""
    try:
        from hep2edge.export.onnx_contract import load_checked
    except ModuleNotFoundError as exc:  # a runtime-only box (Jetson) installs onnx with the `jetson` extra
        raise MissingExtraError(exc.name or "onnx", "jetson") from exc

    _, contract = load_checked(Path(onnx_path))
    plan = plan_engine(Path(onnx_path), contract, batch, workspace_gib, out_dir)
    if real_tensorrt() is None:
        raise NoTensorRT(plan)
    from hep2edge.export.tensorrt.build import build_engine

    return build_engine(plan, say).engine_path
