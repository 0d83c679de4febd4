"""`hep2edge bench`: a thin command over benchmarks/run_all.py, which lives in a source checkout only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from hep2edge.cli.app import app, err_console

RUN_ALL = Path("benchmarks") / "run_all.py"


def run_all_script() -> Path | None:
    """benchmarks/run_all.py next to this package's source (an editable install), else None."""
    import hep2edge

    script = Path(hep2edge.__file__).resolve().parent.parent / RUN_ALL
    return script if script.is_file() else None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Measure speed, memory and accuracy per backend and precision (benchmarks/run_all.py; see --help)."""
    script = run_all_script()
    if script is None:
        err_console.print(f"[bold red]error:[/bold red] `hep2edge bench` runs {RUN_ALL} from a source checkout, and "
                          "this install has none: clone the repository, `pip install -e .` there and run it again",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, str(script), *ctx.args]))
