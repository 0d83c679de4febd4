"""Packaging and CLI shell: layout, import mapping, every command listed, missing extras, no torch in runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from cli_support import run_cli_without

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("check", "synth", "train", "export", "build-engine", "watch", "analyze", "camera", "demo", "bench")
FOLDER_OF = {"hep2edge": REPO / "hep2edge", "hep2edge.train": REPO / "train",
             "hep2edge.export": REPO / "export", "hep2edge.runtime": REPO / "runtime"}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_top_level_layout_matches_design_card() -> None:
    for name in ("README.md", "pyproject.toml", "hep2edge", "train", "export", "runtime", "benchmarks", "tests"):
        assert (REPO / name).exists(), name


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {k: v.name for k, v in FOLDER_OF.items()}
    found = set()
    for package, folder in FOLDER_OF.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found == listed


def test_stage_folders_import_only_under_hep2edge(tmp_path: Path) -> None:
    code = (
        "import importlib.util, hep2edge.runtime, hep2edge.train, hep2edge.export;"
        "print([importlib.util.find_spec(m) is None for m in ('runtime', 'train', 'export')])"
    )
    result = _run("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, True, True]"


@pytest.mark.parametrize("entry", [["-m", "hep2edge", "--help"]])
def test_help_lists_every_command(entry: list[str], tmp_path: Path) -> None:
    result = _run(*entry, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout, command


def test_help_works_without_optional_dependencies(tmp_path: Path) -> None:
    """With torch/onnx/onnxruntime hidden, --help still lists every command and train exits 2 naming the extra."""
    blocked = ("torch", "onnx", "onnxruntime", "segmentation_models_pytorch", "modelopt")
    result = run_cli_without(blocked, ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    result = run_cli_without(blocked, ["train", "--data", "x"], tmp_path)
    assert result.returncode == 2
    assert "pip install 'hep2edge[train]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_and_base_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, importlib, pkgutil, hep2edge, hep2edge.runtime;"
        "import hep2edge.cli.app;"
        "mods = [m.name for m in pkgutil.walk_packages(hep2edge.runtime.__path__, 'hep2edge.runtime.')"
        " if 'torch_backend' not in m.name];"
        "[importlib.import_module(m) for m in mods];"
        "print('torch' in sys.modules)"
    )
    result = _run("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")


def test_cli_imports_no_heavy_library(tmp_path: Path) -> None:
    """`hep2edge --help` stays fast: the CLI builds its options from hep2edge.runtime.settings, not the runtime."""
    heavy = ("numpy", "cv2", "tifffile", "torch", "onnxruntime", "openvino", "tensorrt", "hep2edge.runtime.service")
    result = _run("-c", f"import sys, hep2edge.cli.app; print([m for m in {heavy!r} if m in sys.modules])",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("**Run the tests**", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == block


def test_the_one_module_to_extra_map_names_extras_that_exist() -> None:
    from hep2edge.extras import EXTRA_OF, missing_extra

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {extra for extra in EXTRA_OF.values()} <= set(extras)
    error = missing_extra(ModuleNotFoundError("No module named 'onnxruntime.capi'", name="onnxruntime.capi"))
    assert "pip install 'hep2edge[onnx]'" in str(error)
    own = ModuleNotFoundError("No module named 'hep2edge.nothing'", name="hep2edge.nothing")
    assert missing_extra(own) is own  # not an optional dependency: a real bug, raised as it is
