"""`hep2edge demo`: synthetic data -> training -> fp32/int8 export -> watched scanner folder -> report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hep2edge.cli.app import app
from hep2edge.cli.common import console, import_stage, show_resolved


def _results_table(result: Any) -> Any:
    """Per fresh image: truth vs verdict, mask Dice and time; green where the pattern is right."""
    from rich.table import Table

    table = Table(title="fresh fields, as the scanner delivered them (image level)")
    for column in ("image", "true pattern", "predicted (p)", "true int.", "predicted", "Dice", "cells (true)", "ms"):
        table.add_column(column, no_wrap=True)
    for i in result.outcome.images:
        pattern = "green" if i.pattern == i.true_pattern else "red"
        intensity = "green" if i.intensity == i.true_intensity else "red"
        table.add_row(Path(i.name).stem, i.true_pattern,
                      f"[{pattern}]{i.pattern}[/{pattern}] ({i.pattern_probability:.2f})", i.true_intensity,
                      f"[{intensity}]{i.intensity}[/{intensity}]", f"{i.dice:.3f}", _cells(i), f"{i.analyse_ms:.0f}")
    return table


def _cells(image: Any) -> str:
    """'found (true)' cell counts of a fresh field, '-' where no cells were analysed."""
    if image.cells is None:
        return "-"
    return f"{image.cells} ({image.true_cells})" if image.true_cells is not None else str(image.cells)


def _print_result(result: Any) -> None:
    # a log or pipe has no width to respect: print the table whole rather than cut to 80 columns
    from rich.console import Console

    (console if console.is_terminal else Console(width=120, file=console.file)).print(_results_table(result))
    figures = result.outcome.figures()
    if figures:
        console.print(f"pattern accuracy {figures['pattern_accuracy']:.2f} (chance 0.14), intensity accuracy "
                      f"{figures['intensity_accuracy']:.2f}, mask Dice {figures['dice']:.3f}"
                      + (f"; specimen level pattern accuracy {figures['specimen_pattern_accuracy']:.2f}"
                         if "specimen_pattern_accuracy" in figures else ""), highlight=False)
    for name in result.outcome.missing:
        console.print(f"[red]no result for {name}[/red]", highlight=False)
    if not result.export_passed:
        console.print("[yellow]a precision exceeded its verification limits: see export_report.md[/yellow]")
    total = sum(result.step_seconds.values())
    console.print(f"done in {total / 60:.1f} min (" + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                                result.step_seconds.items()) + ")")
    for what, path in result.artefacts.items():
        console.print(f"  {what}: {path}", highlight=False, markup=False)


@app.command()
def demo(
    out: Path = typer.Option(None, "--out", help="Demo folder (default: the next runs/demo/<n>)."),
    patients: int = typer.Option(40, "--patients", help="Synthetic training patients (4 fields each)."),
    epochs: int = typer.Option(16, "--epochs", help="Training epochs."),
    fresh_patients: int = typer.Option(7, "--fresh-patients", help="New patients the scanner delivers."),
    drop_interval: float = typer.Option(1.0, "--drop-interval", help="Seconds between two scanner files."),
    device: str = typer.Option("auto", "--device", help="Training device: auto | cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and the training."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Make data, train a small model, export fp32 + int8 ONNX, watch a scanner folder, write report.html."""
    import_stage("hep2edge.train.run")  # a missing extra fails here, before any data is made
    import_stage("hep2edge.export.pipeline")
    config_module: Any = import_stage("hep2edge.demo.config")
    run_module: Any = import_stage("hep2edge.demo.run")
    config = config_module.DemoConfig(out=out, patients=patients, epochs=epochs, fresh_patients=fresh_patients,
                                      drop_interval_s=drop_interval, device=device, seed=seed, progress=progress)
    show_resolved("demo", config)
    result = run_module.run_demo(config, console)
    _print_result(result)
    console.print(f"[bold]open {result.report}[/bold]", highlight=False)
