"""One benchmark cell per process: clean peak-memory figures, and a crash (a driver fault) costs one row only.

The parent writes a spec (backend choice, batch, images, contract, budget) to a JSON file and runs
`python <script> --worker SPEC`; the child measures and writes `<SPEC>.result.json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .choice import Choice, open_backend
from .memory import DevicePeak, HostPeak, NoDevice
from .stats import per_second, summarize
from .timing import Budget, time_calls


def measure(choice: Choice, batch: int, inputs: list[Any], budget: Budget, field: bool = False) -> dict[str, Any]:
    """Open, warm up and time `infer` (or `infer_field` on whole fields) cycling over `inputs`; latency summary,
    patches/s (`batch` tiles, or one field's tiles, per call), peak host and GPU memory."""
    gpu = choice.device == "cuda"
    probe: DevicePeak | NoDevice = DevicePeak(use_torch=choice.backend == "torch") if gpu else NoDevice()
    with HostPeak() as host, probe:
        opened = time.perf_counter()
        with open_backend(choice, batch) as backend:
            load_s = time.perf_counter() - opened
            run = backend.infer_field if field else backend.infer
            samples = time_calls(lambda i: run(inputs[i % len(inputs)]), budget)
            described = backend.describe()
    latency = summarize(samples)
    return {"status": "ok", "describe": described, "load_s": load_s, "latency_ms": latency,
            "patches_s": per_second(batch * latency["n"], sum(samples) / 1000),
            **host.result(), **probe.result(), "samples_ms": [round(s, 3) for s in samples]}


def worker(spec_path: Path) -> int:
    """Child side: read the spec, cut the tiles, measure, write the result next to the spec."""
    from hep2edge.contract import ModelContract

    from .data import cycled_batches, image_fields, image_tiles

    spec = json.loads(spec_path.read_text())
    data = dict(spec["choice"], model=Path(spec["choice"]["model"]))
    choice = Choice(**data)
    images, contract = [Path(p) for p in spec["images"]], ModelContract.from_dict(spec["contract"])
    field = spec.get("inference") == "field"
    inputs = image_fields(images, contract) if field else cycled_batches(image_tiles(images, contract), spec["batch"])
    result = measure(choice, spec["batch"], inputs, Budget(**spec["budget"]), field)
    Path(str(spec_path) + ".result.json").write_text(json.dumps(result))
    return 0


def run_isolated(script: Path, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Parent side: run one cell in a fresh interpreter; a failure becomes a `failed` row with the reason."""
    with tempfile.TemporaryDirectory(prefix="hep2edge-cell-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        try:
            done = subprocess.run([sys.executable, str(script), "--worker", str(spec_path)], capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
        result_path = Path(str(spec_path) + ".result.json")
        if done.returncode == 0 and result_path.is_file():
            result: dict[str, Any] = json.loads(result_path.read_text())
            return result
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"status": "failed", "reason": f"exit {done.returncode}: {(lines or ['no output'])[-1][:240]}"}
