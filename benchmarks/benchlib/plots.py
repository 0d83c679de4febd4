"""PNG plots of the result sections (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save_figure(fig: Any, path: Path) -> bool:
    """Lay out, write (PNG, 110 dpi, folder created) and close a figure; True, for the plot functions to return."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None where matplotlib is not installed (no plot then)."""
    try:
        import matplotlib
    except ImportError:
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(axis: Any) -> None:
    """Plain numbers at 1-2-5 steps on a log axis (a range under one decade otherwise shows no label at all)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _label(row: dict[str, Any]) -> str:
    variant = f" {row['variant']}" if row.get("variant") and row["variant"] != "eager" else ""
    return f"{row['backend']} {row['device']} {row['precision']}{variant}"


def _horizontal_boxes(axes: Any, data: list[list[float]]) -> None:
    """Horizontal box plots (matplotlib >= 3.10 says `orientation`, older ones `vert`)."""
    try:
        axes.boxplot(data, orientation="horizontal", showfliers=True)
    except TypeError:
        axes.boxplot(data, vert=False, showfliers=True)


def backends_plot(section: dict[str, Any], path: Path) -> bool:
    """Throughput per backend at each batch (bars) and the latency distribution at the image batch (boxes)."""
    rows = [r for r in section["rows"] if r["status"] == "ok"]
    plt = _pyplot() if rows else None
    if plt is None:
        return False
    labels = list(dict.fromkeys(_label(r) for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig, (bars, boxes) = plt.subplots(1, 2, figsize=(13, 0.45 * len(labels) + 2.5))
    height = 0.8 / len(batches)
    for k, batch in enumerate(batches):
        values = [next((r["patches_s"] for r in rows if _label(r) == lab and r["batch"] == batch), 0.0)
                  for lab in labels]
        bars.barh(np.arange(len(labels)) + k * height, values, height, label=f"batch {batch}")
    bars.set_yticks(np.arange(len(labels)) + 0.4 - height / 2, labels)
    bars.set_xscale("log")
    _plain_log_ticks(bars.xaxis)
    bars.set_xlabel("patches / s (log)")
    bars.invert_yaxis()
    bars.legend(loc="lower right", fontsize="small")
    image_batch = section.get("tiles_per_image")
    shown = image_batch if image_batch in batches else batches[len(batches) // 2]
    picked = [(lab, r) for lab in labels for r in rows if _label(r) == lab and r["batch"] == shown]
    _horizontal_boxes(boxes, [r["samples_ms"] for _, r in picked])
    boxes.set_yticks(range(1, len(picked) + 1), [lab for lab, _ in picked])
    boxes.set_xscale("log")
    _plain_log_ticks(boxes.xaxis)
    boxes.set_xlabel(f"latency per call at batch {shown} (ms, log)")
    boxes.invert_yaxis()
    size = section.get("image_size") or ["?", "?"]
    fig.suptitle(f"{section['models'].get('description', '')}; {size[0]}x{size[1]} image = "
                 f"{section.get('tiles_per_image')} tiles", fontsize="medium")
    return save_figure(fig, path)


def pipeline_plot(section: dict[str, Any], path: Path) -> bool:
    """File-complete -> result-written latency (CDF per mode) and images/s: bare backend vs pipeline."""
    modes = [m for m in section.get("modes", []) if m.get("latencies_ms")]
    plt = _pyplot() if modes else None
    if plt is None:
        return False
    fig, (cdf, rates) = plt.subplots(1, 2, figsize=(12, 4))
    for mode in modes:
        ordered = np.sort(np.asarray(mode["latencies_ms"]))
        cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=mode["name"])
    cdf.set_xscale("log")
    _plain_log_ticks(cdf.xaxis)
    cdf.set_xlabel("file complete -> result written (ms, log)")
    cdf.set_ylabel("fraction of images")
    cdf.legend(fontsize="small")
    names = ["bare backend"] + [f"{m['name']} (fed at {m['rate']:.2f}/s)" if m.get("rate") else m["name"]
                                for m in modes]
    values = [section.get("bare", {}).get("images_s") or 0.0] + [m.get("steady_images_s") or 0.0 for m in modes]
    rates.barh(names, values)
    rates.set_xlabel(f"images / s (batch {section.get('batch')})")
    rates.invert_yaxis()
    fig.suptitle(section.get("title", "pipeline"), fontsize="medium")
    return save_figure(fig, path)
