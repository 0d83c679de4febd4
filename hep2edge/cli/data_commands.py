"""`hep2edge check` and `hep2edge synth`."""

from __future__ import annotations

from hep2edge.cli.app import app  # noqa: F401  (commands are added by the data stage)
