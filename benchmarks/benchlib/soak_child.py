"""`python soak_child.py SNAPSHOTS watch ARGS...`: the `hep2edge` command with tracemalloc on, for bench_soak.

Each SIGUSR1 writes `SNAPSHOTS/snapshot-<n>.trace` (tracemalloc, 8 frames) and `SNAPSHOTS/objects-<n>.json`:
live objects per type after a full collection, traced memory now and its peak since the last snapshot, resident
kB per kind of mapping (/proc/self/smaps) and how much glibc's malloc_trim(0) then hands back to the system
(memory freed but kept by the allocator, not live data). Then the watcher goes on. Diagnosis only: tracing slows
the watcher and its own bookkeeping adds to the resident set, so the plain run's figures are the ones to quote.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import json
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

FRAMES = 8


def resident_by_mapping() -> dict[str, int]:
    """Resident kB of this process per kind of mapping: [heap], anonymous, [stack], shared libraries, other files."""
    found: Counter[str] = Counter()
    kind = "anonymous"
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            path = fields[5] if len(fields) > 5 else ""
            kind = ("anonymous" if not path else path if path.startswith("[")
                    else "libraries" if ".so" in Path(path).name else f"file {Path(path).name}")
        elif fields and fields[0] == "Rss:":
            found[kind] += int(fields[1])
    return dict(found)


def vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def malloc_trim() -> dict[str, Any]:
    """Ask glibc to return freed memory to the system; VmRSS before and after (kB)."""
    before = vm_rss_kb()
    name = ctypes.util.find_library("c")
    try:
        trimmed = bool(ctypes.CDLL(name or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return {"rss_kb": before, "after_trim_kb": None}
    return {"rss_kb": before, "after_trim_kb": vm_rss_kb(), "trimmed": trimmed}


def install(folder: Path) -> None:
    serial = itertools.count()

    def dump(_signum: int, _frame: FrameType | None) -> None:
        n = next(serial)
        gc.collect()
        objects = Counter(type(o).__qualname__ for o in gc.get_objects())
        current, peak = tracemalloc.get_traced_memory()  # the peak since the last snapshot: transient working sets
        tracemalloc.reset_peak()
        tracemalloc.take_snapshot().dump(str(folder / f"snapshot-{n}.trace"))
        mappings = resident_by_mapping()
        (folder / f"objects-{n}.json").write_text(json.dumps({
            "types": dict(objects), "traced": current, "traced_peak": peak, "mappings_kb": mappings,
            "trim": malloc_trim()}))
        (folder / f"done-{n}").write_text("")  # written last: the benchmark waits for it

    signal.signal(signal.SIGUSR1, dump)


def main() -> None:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    install(folder)
    sys.argv = ["hep2edge", *sys.argv[2:]]
    from hep2edge.cli.app import main as cli

    cli()


if __name__ == "__main__":
    main()
