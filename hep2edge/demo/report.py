"""`report.html`: one self-contained page to look at what the demo did (overlays, cells, confusion, curves, export)."""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from hep2edge.demo.outcome import ImageOutcome, Outcome
from hep2edge.html_report import HtmlReport, confusion_table, line_chart_svg
from hep2edge.labels import PATTERNS
from hep2edge.runtime.sinks.files import PATTERN_RGB

THUMBNAIL_WIDTH = 480


@dataclass(frozen=True)
class ReportInputs:
    """What the page shows: the steps' timings and outputs, and where each artefact lies."""

    title: str
    device: str
    backend: str
    step_seconds: dict[str, float]
    outcome: Outcome
    train_summary: dict[str, Any]
    metrics_csv: Path
    export_rows: list[dict[str, Any]]
    artefacts: dict[str, Path]


def thumbnail(overlay: Path, out_dir: Path) -> Path:
    """A JPEG of the overlay, THUMBNAIL_WIDTH wide, so the page stays a few MB."""
    image = cv2.imread(str(overlay), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{overlay}: cannot read the overlay image")
    scale = THUMBNAIL_WIDTH / image.shape[1]
    small = cv2.resize(image, (THUMBNAIL_WIDTH, max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{overlay.stem}.jpg"
    cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


def _epochs(metrics_csv: Path) -> dict[str, list[float]]:
    rows = list(csv.DictReader(metrics_csv.read_text(encoding="utf-8").splitlines()))
    return {key: [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]
            for key in (rows[0].keys() if rows else [])}


def _curves(metrics_csv: Path) -> list[str]:
    columns = _epochs(metrics_csv)
    if not columns:
        return []
    losses = {task: columns[f"train_loss_{task}"] for task in ("mask", "pattern", "intensity")}
    losses["validation (sum)"] = columns["val_loss"]
    held_out = {"Dice": columns["patch_dice"], "pattern accuracy": columns["patch_pattern_accuracy"],
                "intensity accuracy": columns["patch_intensity_accuracy"]}
    return [line_chart_svg("training losses per task", losses),
            line_chart_svg("held-out patients, patch level", held_out)]


def _image_rows(outcome: Outcome) -> tuple[list[list[object]], list[str]]:
    rows: list[list[object]] = []
    classes: list[str] = []
    for i in outcome.images:
        latency = "-" if i.landed_to_result_ms is None else f"{i.landed_to_result_ms:.0f}"
        rows.append([i.name, i.patient, i.true_pattern, f"{i.pattern} ({i.pattern_probability:.2f})",
                     i.true_intensity, i.intensity, f"{i.dice:.3f}", f"{i.analyse_ms:.0f}", latency])
        classes.append("ok" if i.pattern == i.true_pattern else "bad")
    return rows, classes


def _figures_paragraph(outcome: Outcome) -> str:
    f = outcome.figures()
    if not f:
        return "No fresh image was analysed."
    text = (f"Image level on {len(outcome.images)} fresh fields: pattern accuracy {f['pattern_accuracy']:.2f} "
            f"(chance {1 / len(PATTERNS):.2f}), mean class accuracy {f['pattern_mca']:.2f}, intensity accuracy "
            f"{f['intensity_accuracy']:.2f}, mask Dice {f['dice']:.3f}.")
    if "specimen_pattern_accuracy" in f:
        text += f" Specimen (patient) level pattern accuracy {f['specimen_pattern_accuracy']:.2f}."
    if "cells_per_field" in f:
        text += f" Cells: {f['cells_per_field']:.1f} found per field"
        if "true_cells_per_field" in f:
            text += (f" ({f['true_cells_per_field']:.1f} in the truth, count error "
                     f"{f['cell_count_error']:.0%})")
        text += f", AJI {f['aji']:.3f} against the label images." if "aji" in f else "."
    return text + " Synthetic data: these figures say the pipeline works, not how it does on real sera."


def _pattern_counts(counts: dict[str, int]) -> str:
    """'speckled 18, homogeneous 5': the patterns the cells carry, most cells first."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], PATTERNS.index(item[0])))
    return ", ".join(f"{name} {n}" for name, n in ranked if n) or "-"


def _cell_rows(outcome: Outcome) -> tuple[list[list[object]], list[str]]:
    """Per field with cells: found (method), truth, AJI, cells per pattern; `ok` where most cells carry the
    true pattern."""
    rows: list[list[object]] = []
    classes: list[str] = []
    for i in outcome.images:
        if i.cells is None:
            continue
        rows.append([i.name, i.true_pattern, f"{i.cells} ({i.cell_method})",
                     "-" if i.true_cells is None else i.true_cells, "-" if i.aji is None else f"{i.aji:.3f}",
                     _pattern_counts(i.cell_patterns)])
        top = max(i.cell_patterns, key=lambda name: i.cell_patterns[name], default=None)
        classes.append("" if top is None else "ok" if top == i.true_pattern else "bad")
    return rows, classes


def _legend() -> str:
    """The overlay colours: one swatch per pattern, as runtime/sinks/files.py draws each cell's contour."""
    swatches = "".join(
        f'<span style="white-space:nowrap;margin-right:1em"><span style="display:inline-block;width:1.4em;height:.3em;'
        f'vertical-align:middle;background:rgb{PATTERN_RGB[name]}"></span> {html.escape(name)}</span>'
        for name in PATTERNS)
    return f'<p class="legend">{swatches}</p>'


def _caption(i: ImageOutcome) -> str:
    cells = "" if i.cells is None else f", {i.cells} cells"
    return f"{i.name}: {i.pattern} / {i.intensity}{cells} (true {i.true_pattern} / {i.true_intensity})"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _export_table(report: HtmlReport, rows: Sequence[dict[str, Any]]) -> None:
    header = ["precision", "file", "max abs diff", "Dice", "pattern acc", "intensity acc", "verdict"]
    cells, classes = [], []
    for r in rows:
        def figure(key: str, r: dict[str, Any] = r) -> str:
            value, change = r.get(key), (r.get("changes") or {}).get(key)
            if not _finite(value):
                return "-"
            return f"{value:.3f}" + (f" ({change:+.3f})" if _finite(change) else "")

        diff = r.get("max_abs_diff")
        verdict = "within limits" if r.get("passed") else (r.get("error") or "; ".join(r.get("failures") or []))
        cells.append([r["precision"], r.get("file") or "-", f"{diff:.1e}" if _finite(diff) else "-",
                      figure("dice"), figure("pattern_accuracy"), figure("intensity_accuracy"), verdict])
        classes.append("ok" if r.get("passed") else "bad")
    report.table(header, cells, classes)


def build_report(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write `out_dir/report.html` (thumbnails go to out_dir/thumbnails) and return its path."""
    report = HtmlReport(inputs.title)
    total = sum(inputs.step_seconds.values())
    report.paragraph(f"Training on {inputs.device}; analysis with the {inputs.backend} backend. "
                     f"Total {total / 60:.1f} min: " + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                                  inputs.step_seconds.items()) + ".")
    report.heading("Fresh fields from the simulated scanner")
    report.paragraph(_figures_paragraph(inputs.outcome))
    rows, classes = _image_rows(inputs.outcome)
    report.table(["image", "patient", "true pattern", "predicted (p)", "true intensity", "predicted", "mask Dice",
                  "analysis ms", "landed -> result ms"], rows, classes)
    cell_rows, cell_classes = _cell_rows(inputs.outcome)
    if cell_rows:
        report.heading("Cells per fresh field (instances and per-cell patterns from the result JSON)")
        report.table(["image", "true pattern", "cells found (method)", "true cells", "AJI", "cells per pattern"],
                     cell_rows, cell_classes)
    specimens = inputs.outcome.specimens
    if specimens:
        most_cells = any(s.get("most_cells") for s in specimens)
        report.heading("Specimen verdicts (vote over each patient's images"
                       + ("; most cells: the pattern most of its cells carry, as --specimen-method cells gives)"
                          if most_cells else ")"))
        report.table(["specimen", "images", "true pattern", "verdict", *(["most cells"] if most_cells else []),
                      "true intensity", "verdict"],
                     [[s["specimen"], s["images"], s["true_pattern"], s["pattern"],
                       *([s.get("most_cells") or "-"] if most_cells else []), s["true_intensity"], s["intensity"]]
                      for s in specimens],
                     ["ok" if s["pattern"] == s["true_pattern"] else "bad" for s in specimens])
    if any(i.cell_patterns for i in inputs.outcome.images):
        report.heading("Overlays: each cell's contour coloured by its pattern, and the verdict")
        report.raw(_legend())
    else:
        report.heading("Overlays: predicted cell contours and the verdict")
    report.gallery([(thumbnail(i.overlay, out_dir / "thumbnails"), _caption(i))
                    for i in inputs.outcome.images if i.overlay])
    report.heading("Pattern confusion")
    held_out = inputs.train_summary.get("confusion", {}).get("patch")
    matrices = [("fresh fields, image level", inputs.outcome.confusion().tolist())]
    if held_out:
        matrices.append(("held-out training patients at the kept epoch, patch level", held_out))
    report.raw('<div class="charts">' + "".join(
        f"<figure><figcaption>{caption}</figcaption>{confusion_table(PATTERNS, matrix)}</figure>"
        for caption, matrix in matrices) + "</div>")
    report.heading("Training curves")
    report.charts(_curves(inputs.metrics_csv))
    report.heading("Export: each precision against PyTorch fp32 on held-out tiles (patch level)")
    _export_table(report, inputs.export_rows)
    report.heading("Where everything is")
    report.table(["what", "path"], [[k, str(v)] for k, v in inputs.artefacts.items()])
    return report.write(out_dir / "report.html")
