"""`hep2edge export` and `hep2edge build-engine`: thin commands over hep2edge.export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hep2edge.cli.app import app, err_console
from hep2edge.cli.common import console, import_stage, show_resolved

FIELD_SIZE = typer.Option("1040x1388", "--field-size", help="Largest field (HxW) the TensorRT whole-field "
                          "profile takes (--inference field), or none for tile profiles only.")


def _table(report: Any) -> Any:
    """Patch-level figures per precision (green: within the limits), changes against PyTorch fp32 in brackets."""
    from rich.table import Table

    table = Table(title=f"{report.model_id} vs PyTorch fp32, patch level, {report.verification.get('tiles')} tiles")
    for column in ("precision", "max abs diff", "Dice", "pattern acc", "intensity acc"):
        table.add_column(column, no_wrap=True)
    for name, r in report.precisions.items():
        label = f"[green]{name}[/green]" if r.passed else f"[red]{name} (failed)[/red]"
        if r.error:
            table.add_row(label, "-", "-", "-", "-")
            continue
        cells = [f"{getattr(r, m):.3f} ({r.changes.get(m, float('nan')):+.3f})"
                 for m in ("dice", "pattern_accuracy", "intensity_accuracy")]
        table.add_row(label, f"{r.max_abs_diff:.1e}", *cells)
    return table


@app.command()
def export(
    checkpoint: Path = typer.Argument(None, show_default=False,
                                      help="Checkpoint (.pt); default: the best fold of the newest runs/train/<n>."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: the next runs/export/<n>)."),
    precision: list[str] = typer.Option(None, "--precision", help="fp32|fp16|int8, repeatable or comma-separated "
                                        "(fp32 is always written)."),
    calib_data: Path = typer.Option(None, "--calib-data", help="INT8 calibration dataset (default: the "
                                    "checkpoint's training patients)."),
    calib_images: int = typer.Option(32, "--calib-images", help="Number of INT8 calibration tiles, drawn from "
                                     "that many training images where there are enough."),
    calib_method: str = typer.Option("max", "--calib-method", help="INT8 calibration: max|entropy."),
    int8_high_precision: str = typer.Option("fp16", "--int8-high-precision", help="dtype of the INT8 graph's "
                                            "non-quantized layers: fp16 (TensorRT target) or fp32 (faster on CPU)."),
    int8_exclude: list[str] = typer.Option(None, "--int8-exclude", help="Keep nodes out of INT8 by rule: "
                                           "depthwise, se, sigmoid-mul, heads (repeatable)."),
    int8_exclude_ops: list[str] = typer.Option(None, "--int8-exclude-ops", help="ONNX op types kept out of INT8."),
    int8_exclude_nodes: list[str] = typer.Option(None, "--int8-exclude-nodes", help="Node-name regexes kept "
                                                 "out of INT8."),
    val_data: Path = typer.Option(None, "--val-data", help="Held-out dataset for verification (default: the "
                                  "checkpoint's validation patients)."),
    val_images: int = typer.Option(8, "--val-images", help="Held-out images to verify on (all their tiles)."),
    batch: str = typer.Option("1,8,16", "--batch", help="TensorRT profile batch sizes MIN,OPT,MAX."),
    field_size: str = FIELD_SIZE,
    engine: bool = typer.Option(False, "--engine", help="Also build TensorRT engines (needs TensorRT here)."),
    workspace: float = typer.Option(4.0, "--workspace", help="TensorRT workspace limit in GiB."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or newer)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify with onnxslim when outputs "
                                  "still match."),
    max_dice_drop: float = typer.Option(0.01, "--max-dice-drop", help="Fail when a precision loses more Dice."),
    max_accuracy_drop: float = typer.Option(0.02, "--max-accuracy-drop", help="Fail when a precision loses more "
                                            "pattern or intensity accuracy."),
    max_fp32_error: float = typer.Option(1e-4, "--max-fp32-error", help="Fail when fp32 ONNX differs from "
                                         "PyTorch by more (relative)."),
    max_aji_drop: float = typer.Option(0.02, "--max-aji-drop", help="Fail when a precision loses more per-cell "
                                       "AJI (models with a distance or pattern-map head)."),
    max_miou_drop: float = typer.Option(0.02, "--max-miou-drop", help="Fail when a precision loses more "
                                        "pattern-map mIoU (models with a pattern-map head)."),
) -> None:
    """Export a checkpoint to ONNX (fp32, and fp16 / int8 in the graph), verify each, optionally build engines."""
    jetson = {"onnx": "jetson", "pycuda": "jetson"}
    config_mod = import_stage("hep2edge.export.config", jetson)
    config = config_mod.ExportConfig(
        checkpoint=checkpoint, out=out, precisions=config_mod.parse_precisions(precision),
        calib_data=calib_data, val_data=val_data, val_images=val_images,
        int8=config_mod.Int8Options(
            calib_method=calib_method, calib_images=calib_images, high_precision=int8_high_precision,
            exclude_rules=config_mod.parse_names(int8_exclude),
            exclude_op_types=config_mod.parse_names(int8_exclude_ops),
            exclude_nodes=config_mod.parse_names(int8_exclude_nodes),
        ),
        limits=config_mod.Limits(max_fp32_error, max_dice_drop, max_accuracy_drop, max_aji_drop, max_miou_drop),
        batch=config_mod.parse_batch(batch, field_size), engine=engine, workspace_gib=workspace, opset=opset,
        simplify=simplify,
    )
    show_resolved("export", config)
    pipeline = import_stage("hep2edge.export.pipeline")
    with console.status("exporting") as status:
        def say(message: str) -> None:
            status.update(message)
            console.print(message, highlight=False, soft_wrap=True, markup=False)

        report = pipeline.run_export(config, say=say)
    console.print(_table(report))
    console.print(f"wrote {report.out_dir}/export_report.json and .md; {report.simplification}", highlight=False,
                  soft_wrap=True, markup=False)
    if not report.passed:
        for line in report.failures():
            err_console.print(f"[bold red]failed:[/bold red] {escape(line)}", highlight=False)
        raise typer.Exit(1)


@app.command("build-engine")
def build_engine(
    onnx_file: Path = typer.Argument(None, help="An ONNX file written by `hep2edge export` (model[.fp16|.int8].onnx).",
                                     show_default=False),
    out: Path = typer.Option(None, "--out", help="Folder for the engine (default: next to the ONNX file)."),
    batch: str = typer.Option("1,8,16", "--batch", help="Profile batch sizes MIN,OPT,MAX."),
    field_size: str = FIELD_SIZE,
    workspace: float = typer.Option(4.0, "--workspace", help="Workspace limit in GiB."),
) -> None:
    """Build a strongly typed TensorRT engine + sidecar on this (target) machine."""
    if onnx_file is None:
        err_console.print("[bold red]error:[/bold red] pass MODEL.onnx (a file written by `hep2edge export`)")
        raise typer.Exit(2)
    jetson = {"onnx": "jetson", "pycuda": "jetson"}
    config_mod = import_stage("hep2edge.export.config", jetson)
    profile = config_mod.parse_batch(batch, field_size)
    show_resolved("build-engine", {"onnx": onnx_file, "out": out, "batch": profile, "workspace_gib": workspace})
    engines = import_stage("hep2edge.export.tensorrt.engines", jetson)
    path = engines.build_engine_for_onnx(onnx_file, profile, workspace, out, say=console.print)
    console.print(f"wrote {path} and {path.name}.json", highlight=False, markup=False)
