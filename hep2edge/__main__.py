"""`python -m hep2edge` runs the CLI."""

from hep2edge.cli.app import main

main()
