"""`hep2edge check` and `hep2edge synth`: thin commands over hep2edge.data and hep2edge.synth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hep2edge.cli.app import app, err_console
from hep2edge.cli.common import console, show_resolved
from hep2edge.cli.flags import command_flags, in_flags


def _require(value: Any, what: str, key: str) -> Any:
    """A positional that may come from hep2edge.yaml: exit 2 with one line when neither gives it."""
    if value is None:
        err_console.print(f"[bold red]error:[/bold red] pass {what} or set {key} in hep2edge.yaml", highlight=False)
        raise typer.Exit(2)
    return value


def _summary_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table()
    table.add_column("class")
    table.add_column("label")
    table.add_column("patients", justify="right")
    table.add_column("images", justify="right")
    for kind in ("patterns", "intensities"):
        for name, counts in summary[kind].items():
            table.add_row(kind[:-1] if kind == "patterns" else "intensity", name,
                          str(counts["patients"]), str(counts["images"]))
    return table


@app.command()
def check(
    data: Path = typer.Argument(None, help="Dataset folder (images, masks, manifest CSV).", show_default=False),
    manifest: Path = typer.Option(None, "--manifest", help="Manifest CSV (default: labels.csv or the single *.csv)."),
    max_problems: int = typer.Option(50, "--max-problems", min=1, help="Stop after this many problems."),
    check_images: bool = typer.Option(True, "--decode/--no-decode", help="Decode every image and mask."),
    allow_outside: bool = typer.Option(False, "--allow-outside",
                                       help="Accept manifest paths that resolve outside the dataset folder."),
) -> None:
    """Validate a dataset: print its summary, or every problem as `file:line: message` (exit 1)."""
    from hep2edge.data.validate import validate_dataset

    root = _require(data, "DIR", "check.data")
    report = validate_dataset(root, manifest, max_problems=max_problems, check_images=check_images,
                              allow_outside=allow_outside)
    if report.ok:
        summary = report.summary()
        console.print(f"{summary['root']}: {summary['patients']} patients, {summary['images']} images, no problems",
                      highlight=False, soft_wrap=True, markup=False)
        console.print(_summary_table(summary))
        return
    flags = command_flags(typer.main.get_command(app), ["check"])
    for line in report.lines():
        typer.echo(in_flags(line, flags))
    err_console.print(f"[bold red]{len(report.problems)} problem(s)[/bold red] in {escape(str(root))}", highlight=False,
                      soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def synth(
    out: Path = typer.Argument(None, help="Output folder for the synthetic dataset.", show_default=False),
    patients: int = typer.Option(None, "--patients", help="Number of patients (7 covers every pattern)."),
    images_per_patient: int = typer.Option(4, "--images-per-patient", help="Images per patient."),
    size: str = typer.Option("1040x1388", "--size", help="Image size HEIGHTxWIDTH."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes the same dataset."),
) -> None:
    """Write a synthetic dataset in the I3A layout (TIFF images, masks, labels.csv)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hep2edge.synth.writer import SynthConfig, parse_size, synthesize_dataset

    out = _require(out, "OUT", "synth.out")
    patients = _require(patients, "--patients", "synth.patients")
    config = SynthConfig(out=Path(out), patients=int(patients), images_per_patient=int(images_per_patient),
                         size=parse_size(size), seed=int(seed))
    config.check()
    show_resolved("synth", config)
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("synth", total=config.patients * config.images_per_patient)
        root = synthesize_dataset(config, progress=lambda done, total: bar.update(task, completed=done))
    console.print(f"wrote {config.patients * config.images_per_patient} images to {root}", highlight=False)
