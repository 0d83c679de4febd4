"""The `hep2edge` Typer application and its entry point.

Option defaults come from `hep2edge.yaml` in the working directory (one section per command);
flags override them. Library errors become one line on stderr and exit code 2, naming flags where
they name a parameter of the command (hep2edge.cli.flags).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from hep2edge import __version__
from hep2edge.cli.flags import command_flags, in_flags
from hep2edge.errors import ConfigError, Hep2EdgeError
from hep2edge.workspace import CONFIG_FILE, load_defaults, unknown_defaults

app = typer.Typer(
    name="hep2edge",
    help="Train, export and run a multi-task U-Net for HEp-2 IIF images next to the microscope.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hep2edge {__version__}")
        raise typer.Exit()


def _check_defaults(ctx: typer.Context, defaults: dict[str, dict[str, object]]) -> None:
    """Refuse a hep2edge.yaml section or key that names no command or option."""
    group = ctx.command
    commands = getattr(group, "commands", {})
    options = {name: {p.name for p in command.params if p.name} for name, command in commands.items()}
    problems = unknown_defaults(defaults, options)
    if problems:
        raise ConfigError(f"{CONFIG_FILE}: " + "; ".join(problems))


def _listify(ctx: typer.Context, defaults: dict[str, dict[str, object]]) -> None:
    """A scalar in hep2edge.yaml for a repeatable option (`data: DIR`) means a list of one."""
    commands = getattr(ctx.command, "commands", {})
    for name, values in defaults.items():
        repeatable = {p.name for p in commands[name].params if getattr(p, "multiple", False)}
        for key, value in values.items():
            if key in repeatable and value is not None and not isinstance(value, (list, tuple)):
                values[key] = [value]


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Defaults for every command's options come from ./hep2edge.yaml when it exists."""
    defaults = load_defaults()
    if defaults:
        _check_defaults(ctx, defaults)
        _listify(ctx, defaults)
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
        err_console.print(f"[dim]defaults from {CONFIG_FILE}: {', '.join(sorted(defaults))}[/dim]")


def _register_commands() -> None:
    # Importing the modules registers their commands on `app`; they import nothing heavy at import time.
    from hep2edge.cli import (  # noqa: F401
        bench_command,
        data_commands,
        demo_command,
        export_commands,
        review_commands,
        runtime_commands,
        train_command,
    )


_register_commands()


def main() -> None:
    """Console entry point: run the app, turning library errors into one line and exit code 2."""
    try:
        app()
    except Hep2EdgeError as exc:
        message = in_flags(str(exc), command_flags(typer.main.get_command(app), sys.argv[1:]))
        err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
