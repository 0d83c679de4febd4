"""Where images come from: `files` (paths, folders, globs), `watch` (a folder, until stopped), `camera`.

One module each; every command builds its own (their settings differ), so there is no name registry.
"""

from __future__ import annotations

from hep2edge.runtime.sources.base import IMAGE_SUFFIXES, Item, Source, is_candidate

__all__ = ["IMAGE_SUFFIXES", "Item", "Source", "is_candidate"]
