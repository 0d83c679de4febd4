"""mypy checks the TensorRT code against `tensorrt-stubs` (10.13 API), prepared by tools/trt_stubs.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from trt_stubs import StubsNotInstalled, installed_stub_dirs, mypy_config, patch_stub, prepare_stubs

REPO = Path(__file__).resolve().parents[1]
TENSORRT_MODULES = ("export/tensorrt/build.py", "runtime/backends/tensorrt_backend.py")
PROBE = (
    "import tensorrt as trt\n\n\n"
    "def probe(context: trt.IExecutionContext) -> None:\n"
    "    context.execute_async_v2(0)  # type: ignore[attr-defined]\n"
)


def test_patch_fixes_what_does_not_parse() -> None:
    text = (
        "import tensorrt_libs as tensorrt_libs\n"
        "    def configure_plugin(self, in: list[int], out: list[int]) -> None: ...\n"
        "    def add_scale_nd(self, input: ITensor, power: Weights = None, channel_axis: int) -> IScaleLayer:\n"
        "    def pin(self, input: int) -> None: ...\n"
    )
    patched = patch_stub(text)
    assert "tensorrt_libs" not in patched
    assert "(self, in_: list[int], out" in patched and "input: int" in patched
    assert "channel_axis: int = ...)" in patched


def _stubs_or_skip() -> None:
    try:
        installed_stub_dirs()
    except StubsNotInstalled as exc:
        pytest.skip(f"tensorrt-stubs not installed ({exc})")


@pytest.mark.slow
def test_tensorrt_modules_typecheck_against_stubs(tmp_path: Path) -> None:
    _stubs_or_skip()
    pytest.importorskip("mypy")
    stubs = prepare_stubs(tmp_path / "stubs")
    assert (stubs / "tensorrt" / "__init__.pyi").is_file() and (stubs / "tensorrt_bindings" / "tensorrt.pyi").is_file()
    config = tmp_path / "mypy.ini"
    config.write_text(mypy_config("python_version = 3.11\nignore_missing_imports = True\ncheck_untyped_defs = True")
                      + "\n[mypy-trt_probe]\nwarn_unused_ignores = True\n")
    # ignore_missing_imports would turn unresolved stubs into Any and pass anything: the probe's ignore is
    # only used (no "unused ignore" error) when `tensorrt` resolves to the stubs in this very run
    probe = tmp_path / "trt_probe.py"
    probe.write_text(PROBE)
    modules = [m for m in TENSORRT_MODULES if (REPO / m).is_file()]
    assert len(modules) == len(TENSORRT_MODULES)
    env = {**os.environ, "MYPYPATH": str(stubs)}
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
               "--follow-imports", "silent", *modules, str(probe)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_stubs_catch_a_misspelt_tensorrt_call(tmp_path: Path) -> None:
    """The check is real: a wrong method name on a TensorRT object fails mypy."""
    _stubs_or_skip()
    pytest.importorskip("mypy")
    stubs = prepare_stubs(tmp_path / "stubs")
    bad = tmp_path / "bad.py"
    bad.write_text("import tensorrt as trt\n\n\ndef f(b: trt.Builder) -> None:\n    b.create_netwrk(0)\n")
    config = tmp_path / "mypy.ini"
    config.write_text(mypy_config("python_version = 3.11"))
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
                             str(tmp_path / "cache"), str(bad)], env={**os.environ, "MYPYPATH": str(stubs)},
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1 and 'has no attribute "create_netwrk"' in result.stdout
