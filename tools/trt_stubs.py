"""Make the installed `tensorrt-stubs` usable by mypy: `python tools/trt_stubs.py DEST`.

The package (install with `pip install --no-deps tensorrt-stubs==10.13.0.35.1`) puts `tensorrt/__init__.pyi`
and `tensorrt_bindings/*.pyi` in site-packages without a py.typed marker, and they do not parse as they
are. `prepare_stubs(dest)` copies them into `dest` (put it on MYPYPATH) with these fixes:
the keyword parameter `in` renamed `in_` (a keyword cannot be a parameter name), `add_scale_nd`'s trailing
`channel_axis: int` given a default, and the `import tensorrt_libs` line dropped. Errors inside the
stubs themselves are silenced through `MYPY_OVERRIDES` (mypy config), not by editing more of them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")
MYPY_OVERRIDES = """\
[mypy-tensorrt]
ignore_errors = True

[mypy-tensorrt.*]
ignore_errors = True

[mypy-tensorrt_bindings.*]
ignore_errors = True
"""

_IN_PARAM = re.compile(r"(?<=[(,\s])in(?=\s*:)")
_CHANNEL_AXIS = re.compile(r"(def add_scale_nd\(.*channel_axis: int)(\))")
_LIBS_IMPORT = re.compile(r"^import tensorrt_libs.*\n", re.MULTILINE)


class StubsNotInstalled(RuntimeError):
    """tensorrt-stubs is not installed where this Python looks."""


def installed_stub_dirs() -> dict[str, Path]:
    """{package: folder} of the installed stub packages; StubsNotInstalled if any is missing."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        # searched on sys.path, not imported: `tensorrt` may be hidden or be the real, compiled package
        candidates = (Path(entry or ".") / package for entry in sys.path)
        folder = next((c for c in candidates if (c / "__init__.pyi").is_file()), None)
        if folder is None:
            raise StubsNotInstalled(
                f"no {package}/__init__.pyi found; pip install --no-deps tensorrt-stubs==10.13.0.35.1"
            )
        found[package] = folder
    return found


def patch_stub(text: str) -> str:
    """The fixes that make one generated .pyi parse and type-check."""
    text = _IN_PARAM.sub("in_", text)
    text = _CHANNEL_AXIS.sub(r"\1 = ...\2", text)
    return _LIBS_IMPORT.sub("", text)


def prepare_stubs(dest: Path) -> Path:
    """Copy and patch the installed stubs into `dest` (created); returns `dest` for MYPYPATH."""
    dest = Path(dest)
    for package, folder in installed_stub_dirs().items():
        target = dest / package
        target.mkdir(parents=True, exist_ok=True)
        for stub in sorted(folder.glob("*.pyi")):
            (target / stub.name).write_text(patch_stub(stub.read_text(encoding="utf-8")), encoding="utf-8")
    return dest


def mypy_config(base: str = "") -> str:
    """A mypy ini config: `base` settings under [mypy] plus the overrides that silence the stubs."""
    return "[mypy]\n" + base.strip() + "\n\n" + MYPY_OVERRIDES


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tools/trt_stubs.py DEST", file=sys.stderr)
        return 2
    try:
        dest = prepare_stubs(Path(args[0]))
    except StubsNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"TensorRT stubs ready: MYPYPATH={dest.resolve()} (add ignore_errors for tensorrt, tensorrt_bindings.*)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
