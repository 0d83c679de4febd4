"""The targets checked against a day's results, and the short table benchmarks/README.md shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tables import fmt, markdown_table, verdict

E2E_P50_MS = 15.0
PIPELINE_RATIO = 0.9
COPY_FRACTION = 0.7


def _rate_run(pipeline: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in pipeline.get("modes", []) if m["name"] == "rate"), None)


def _image_row(preprocess: dict[str, Any]) -> dict[str, Any] | None:
    """The case the runtime meets most: a 1040 x 1388 uint8 frame, fixed normalisation, fp32 engine input."""
    rows = [r for r in preprocess.get("rows", []) if "fraction_of_copy" in r]
    wanted = [r for r in rows if r["size"] == [1040, 1388] and r["dtype"] == "uint8"
              and r["normalization"] == "fixed" and r["output"] == "fp32"]
    return (wanted or rows or [None])[0]


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value, where it comes from and met / not met / not measured."""
    sections = data.get("sections", {})
    pipeline, preprocess = sections.get("pipeline", {}), sections.get("preprocess", {})
    gpu = bool(data.get("environment", {}).get("gpus"))
    on_gpu = pipeline.get("choice", {}).get("device") == "cuda"
    found = []
    if gpu:
        rate = _rate_run(pipeline) if on_gpu else None
        value = rate["latency_ms"]["p50"] if rate else None
        found.append({"target": f"one image end to end (file complete -> result written), p50 <= {E2E_P50_MS:g} ms",
                      "value": value, "unit": "ms", "verdict": verdict(value, E2E_P50_MS, higher_is_better=False),
                      "source": f"pipeline rate run, {pipeline.get('label', '-')}"})
    ratio = pipeline.get("pipeline_ratio")
    found.append({"target": f"steady pipeline throughput >= {PIPELINE_RATIO:.0%} of the bare backend's",
                  "value": ratio, "unit": "", "verdict": verdict(ratio, PIPELINE_RATIO),
                  "source": f"pipeline burst run, {pipeline.get('label', '-')}, batch {pipeline.get('batch', '-')}"})
    if gpu:
        row = _image_row(preprocess)
        value = row["fraction_of_copy"] if row else None
        where = (f"{row['size'][0]}x{row['size'][1]} {row['dtype']} {row['normalization']} -> {row['output']}"
                 if row else preprocess.get("cuda", {}).get("reason", "not run"))
        found.append({"target": f"preprocessing kernel >= {COPY_FRACTION:.0%} of device copy bandwidth",
                      "value": value, "unit": "", "verdict": verdict(value, COPY_FRACTION), "source": where})
    return found


def targets_markdown(found: list[dict[str, Any]]) -> str:
    rows = [[t["target"], fmt(t["value"], 3 if not t["unit"] else 1, f" {t['unit']}" if t["unit"] else ""),
             t["verdict"], t["source"]] for t in found]
    return "## Targets\n\n" + markdown_table(["target", "measured", "verdict", "from"], rows) + "\n"


def latest_files(results: Path) -> list[Path]:
    """The newest `<machine>-<date>.json` per machine (files holding benchmark sections)."""
    newest: dict[str, Path] = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "sections" in data:
            machine = data.get("machine", path.stem)
            if machine not in newest or data.get("date", "") >= json.loads(newest[machine].read_text())["date"]:
                newest[machine] = path
    return list(newest.values())


def readme_rows(data: dict[str, Any]) -> list[list[str]]:
    """One row per measured backend x precision x variant at the image batch, for benchmarks/README.md."""
    backends = data.get("sections", {}).get("backends", {})
    image = backends.get("tiles_per_image")
    batches = sorted({r["batch"] for r in backends.get("rows", []) if r["status"] == "ok"})
    largest = batches[-1] if batches else None
    machine = f"{data['machine']} ({data['date']})"
    rows = []
    for r in backends.get("rows", []):
        if r["status"] != "ok" or r["batch"] != image:
            continue
        big = next((x for x in backends["rows"] if x["status"] == "ok" and x["batch"] == largest and
                    (x["backend"], x["device"], x["precision"], x["variant"]) ==
                    (r["backend"], r["device"], r["precision"], r["variant"])), None)
        label = f"{r['backend']} {r['device']} {r['precision']}" + (f" {r['variant']}" if r["variant"] else "")
        rows.append([machine, label, fmt(r["latency_ms"]["p50"], 1),
                     f"{fmt(big['images_s'], 2)} (batch {largest})" if big else "-"])
    return rows


def host_note(data: dict[str, Any], host: dict[str, Any]) -> str:
    """One line: the images/s ceilings the reader and writer stages put on the pipeline (bench_host)."""
    best = {stage: max(host["runs"], key=lambda r: r[f"{stage}_images_s"]) for stage in ("reader", "writer")}
    parts = [f"{stage} {fmt(run[f'{stage}_images_s'], 0)} images/s ({run['threads']} threads)"
             for stage, run in best.items()]
    return (f"- {data['machine']} ({data['date']}), host stages without a model (`bench_host`, "
            f"{host['size'][0]} x {host['size'][1]}): {', '.join(parts)}.")


def readme_markdown(results: Path) -> str:
    """benchmarks/README.md's Results table and notes from the latest result file of each machine."""
    lines, notes, plots = [], [], []
    rows: list[list[str]] = []
    any_gpu = False
    for path in latest_files(results):
        data = json.loads(path.read_text())
        rows += readme_rows(data)
        any_gpu = any_gpu or bool(data.get("environment", {}).get("gpus"))
        plot = data["sections"].get("backends", {}).get("plot")
        if plot:
            plots.append(f"![{data['machine']} ({data['date']}): throughput and latency per backend]"
                         f"(results/{plot})")  # relative to benchmarks/README.md
        pipeline = data["sections"].get("pipeline")
        if pipeline:
            rate = _rate_run(pipeline)
            notes.append(f"- {data['machine']} ({data['date']}), pipeline through `watch` with {pipeline['label']}, "
                         f"batch {pipeline['batch']}: file complete -> result written p50 "
                         f"{fmt(rate['latency_ms']['p50'] if rate else None, 1)} ms; pipeline_ratio "
                         f"{fmt(pipeline.get('pipeline_ratio'), 2)}. Full tables: [{path.with_suffix('.md').name}]"
                         f"(results/{path.with_suffix('.md').name}).")
        host = data["sections"].get("host")
        if host:
            notes.append(host_note(data, host))
    if rows:
        lines.append(markdown_table(["machine (date)", "backend", "p50 ms per image (one call)", "images/s"],
                                    rows, right=(2, 3)))
    if not any_gpu:
        notes.append("- GPU: not measured yet (no result file from a GPU machine in results/).")
    return "\n".join(lines + [""] + notes + [""] + plots) + "\n"
