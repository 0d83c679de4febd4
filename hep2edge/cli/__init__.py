"""The Typer CLI: thin commands, one module per stage, heavy imports inside each command."""
