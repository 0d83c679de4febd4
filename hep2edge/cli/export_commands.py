"""`hep2edge export` and `hep2edge build-engine`: thin commands over hep2edge.export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hep2edge.cli.app import app, err_console
from hep2edge.cli.common import console, import_stage, show_resolved
from hep2edge.cli.export_options import ENGINE_BUILD_OPTIONS, EXPORT_OPTIONS
from hep2edge.cli.reporter import RichReporter
from hep2edge.cli.runtime_options import shared_options


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
@shared_options(EXPORT_OPTIONS)
def export(
    checkpoint: Path = typer.Argument(None, show_default=False,
                                      help="Checkpoint (.pt); default: the best fold of the newest runs/train/<n>."),
    **options: Any,
) -> None:
    """Export a checkpoint to ONNX (fp32, and fp16 / int8 in the graph), verify each, optionally build engines."""
    jetson = {"onnx": "jetson", "pycuda": "jetson"}
    options_mod = import_stage("hep2edge.export.options", jetson)
    config = options_mod.export_config(options, checkpoint=checkpoint)
    show_resolved("export", config)
    pipeline = import_stage("hep2edge.export.pipeline")
    with console.status("exporting") as status:
        report = pipeline.run_export(config, RichReporter(console, spinner=status))
    console.print(_table(report))
    console.print(f"wrote {report.out_dir}/export_report.json and .md; {report.simplification}", highlight=False,
                  soft_wrap=True, markup=False)
    if not report.passed:
        for line in report.failures():
            err_console.print(f"[bold red]failed:[/bold red] {escape(line)}", highlight=False)
        for line in report.explanations():
            err_console.print(escape(line), highlight=False)
        raise typer.Exit(1)


@app.command("build-engine")
@shared_options(ENGINE_BUILD_OPTIONS)
def build_engine(
    onnx_file: Path = typer.Argument(None, help="An ONNX file written by `hep2edge export` (model[.fp16|.int8].onnx).",
                                     show_default=False),
    out: Path = typer.Option(None, "--out", help="Folder for the engine (default: next to the ONNX file)."),
    **options: Any,
) -> None:
    """Build a strongly typed TensorRT engine + sidecar on this (target) machine."""
    if onnx_file is None:
        err_console.print("[bold red]error:[/bold red] pass MODEL.onnx (a file written by `hep2edge export`)")
        raise typer.Exit(2)
    jetson = {"onnx": "jetson", "pycuda": "jetson"}
    config = import_stage("hep2edge.export.options", jetson).export_config(options)
    profile, workspace = config.batch, config.workspace_gib
    show_resolved("build-engine", {"onnx": onnx_file, "out": out, "batch": profile, "workspace_gib": workspace})
    engines = import_stage("hep2edge.export.tensorrt.engines", jetson)
    path = engines.build_engine_for_onnx(onnx_file, profile, workspace, out, say=RichReporter(console).say)
    console.print(f"wrote {path} and {path.name}.json", highlight=False, markup=False)
