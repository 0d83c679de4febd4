"""A one-shot list of inputs: files, folders (their images) and glob patterns, in a stable order."""

from __future__ import annotations

import glob
import threading
from pathlib import Path

from hep2edge.errors import ConfigError
from hep2edge.runtime.sources.base import Emit, Item, Source, is_candidate


def expand_inputs(specs: list[str], recursive: bool = False) -> list[Path]:
    """Files as given (even non-images: they fail with a reason), folders -> their images, globs -> matches."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern) if p.is_file() and is_candidate(p, path)))
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            if not matches:
                raise ConfigError(f"{spec}: the pattern matches no file")
            found.extend(p for p in matches if p.is_file() and is_candidate(p))
        else:
            found.append(path)  # a missing file is reported as a failed input, not a crash
    unique = list(dict.fromkeys(p.absolute() for p in found))
    if not unique:
        raise ConfigError(f"no images found in {', '.join(specs)}")
    return unique


class FileListSource(Source):
    """`hep2edge analyze PATH...`: every input once, then the source ends."""

    name = "files"

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths

    def run(self, emit: Emit, stop: threading.Event) -> None:
        for path in self.paths:
            if stop.is_set() or not emit(Item(key=str(path), name=path.stem, path=path)):
                return

    def describe(self) -> str:
        return f"{len(self.paths)} input file(s)"
