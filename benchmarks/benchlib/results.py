"""Machine naming, environment versions and the result files every benchmark writes (JSON + Markdown).

The issue-7 scripts share one file per machine and day, `<machine>-<date>.json` / `.md`: each script
replaces its own section (`backends`, `pipeline`, ...) and the Markdown is regenerated from all sections.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"
PACKAGES = ("hep2edge", "numpy", "torch", "onnxruntime", "onnxruntime-gpu", "nvidia-modelopt", "tensorrt",
            "pycuda", "segmentation-models-pytorch", "opencv-python-headless", "watchdog")
SECTION_ORDER = ("targets", "backends", "pipeline", "pipeline-field", "host", "preprocess", "accuracy")


def slug(text: str) -> str:
    """A file-name-safe lower-case name."""
    text = re.sub(r"\((R|TM)\)|CPU|Processor|@.*$", "", text, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.node() or "unknown"


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs nvidia-smi lists (empty without a driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine_name(with_gpu: bool = False) -> str:
    """A file-name-safe machine name: the CPU model (with `with_gpu`, the first GPU's name before it)."""
    cpu = slug(cpu_model())
    gpus = gpu_names() if with_gpu else []
    return f"{slug(gpus[0].split(',')[0])}-{cpu}" if gpus else cpu


def versions() -> dict[str, str]:
    """Installed versions of the packages a benchmark depends on (absent ones left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, Any]:
    """What a reader needs to judge a number: machine, cores, Python, packages, GPU and driver."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"machine": machine_name(with_gpu=True), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "cpus_usable": usable, "gpus": gpu_names(), "platform": platform.platform(),
            "python": platform.python_version(), "packages": versions()}


def command_line(script: str | None = None) -> str:
    """The command as a reader would type it again."""
    name = script or sys.argv[0]
    return "python " + shlex.join([os.path.relpath(name) if os.path.isabs(name) else name, *sys.argv[1:]])


def today() -> str:
    return time.strftime("%Y-%m-%d")


def result_path(out_dir: Path, machine: str, date: str | None = None, suffix: str = ".json") -> Path:
    return Path(out_dir) / f"{machine}-{date or today()}{suffix}"


def finite(value: Any) -> Any:
    """NaN/inf -> None throughout, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python values; anything else -> its string."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_json_md(json_path: Path, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write `data` as JSON and `markdown` next to it (same stem, .md); both replaced atomically."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path = json_path.with_suffix(".md")
    for path, text in ((json_path, json.dumps(finite(data), indent=2, default=_plain) + "\n"), (md_path, markdown)):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return json_path, md_path


def update_section(out_dir: Path, name: str, section: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Put `section` (with its `markdown`) under `name` in today's `<machine>-<date>.json`; rewrite the .md."""
    env = environment()
    path = result_path(out_dir, env["machine"])
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    data.update({"machine": env["machine"], "date": today(), "environment": env})
    data.setdefault("sections", {})[name] = {**section, "markdown": markdown}
    return write_json_md(path, data, render_markdown(data))


def publish_section(out_dir: Path, name: str, section: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                    plot: Callable[[dict[str, Any], Path], bool] | None = None) -> int:
    """A script's last step: its plot (`<machine>-<date>-<name>.png`), its section in today's files, the table."""
    from benchlib.cli import say  # benchlib.cli imports this module

    if plot is not None:
        path = result_path(out_dir, machine_name(with_gpu=True), suffix=f"-{name}.png")
        if plot(section, path):
            section["plot"] = path.name
    text = markdown(section)
    written, md = update_section(out_dir, name, section, text)
    say(f"wrote {written} and {md}")
    print(text)
    return 0


def render_markdown(data: dict[str, Any]) -> str:
    """The whole day's file: a header naming the machine and versions, then each section's own Markdown."""
    env = data.get("environment", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    lines = [f"# Benchmarks on {data.get('machine')} ({data.get('date')})", "",
             f"CPU: {env.get('cpu')} ({env.get('cpus_usable')} of {env.get('cpus')} cores usable); "
             f"GPU: {', '.join(env.get('gpus') or ['none'])}; Python {env.get('python')}; {env.get('platform')}", "",
             f"Packages: {packages}", ""]
    sections = data.get("sections", {})
    for name in sorted(sections, key=lambda n: (SECTION_ORDER.index(n) if n in SECTION_ORDER else 99, n)):
        lines += [str(sections[name].get("markdown", f"## {name}\n\n(no Markdown stored)")).rstrip(), ""]
    return "\n".join(lines)
