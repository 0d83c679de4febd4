"""Commands of this stage (being written)."""

from __future__ import annotations

from hep2edge.cli.app import app  # noqa: F401
