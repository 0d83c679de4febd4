"""The export report: per precision, output differences and task metrics against PyTorch fp32.

`export_report.json` (machine-readable: `precisions: {fp32|fp16|int8: {file, max_abs_diff, dice, ...}}`)
and `export_report.md` (the same as tables), both written atomically.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hep2edge.atomic import atomic_write_json, atomic_write_text
from hep2edge.export.config import Limits
from hep2edge.export.verify import CELL_METRICS, TASK_METRICS, OutputDiff
from hep2edge.workspace import EXPORT_REPORT_JSON, EXPORT_REPORT_MD

OPENVINO_NOTE = "openvino"  # a precision's note on why it fails under OpenVINO on this CPU (shown with failures)
CELL_LABELS = {"aji": "AJI", "pq": "PQ", "f1": "cell F1", "miou": "mIoU"}


@dataclass
class PrecisionResult:
    """One precision's file, how far its outputs are from PyTorch fp32, and what that costs in the task."""

    precision: str
    file: str | None = None
    sha256: str | None = None
    max_abs_diff: float = float("nan")
    mean_abs_diff: float = float("nan")
    rel_error: float = float("nan")
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    dice: float = float("nan")
    pattern_accuracy: float = float("nan")
    intensity_accuracy: float = float("nan")
    changes: dict[str, float] = field(default_factory=dict)
    cells: dict[str, float] = field(default_factory=dict)  # aji, pq, f1, miou (dense heads); flat in to_dict
    image_level: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    runtime: str = "onnxruntime"  # what ran the file for these figures
    under: dict[str, dict[str, Any]] = field(default_factory=dict)  # the same figures under other runtimes

    def add_runtime(self, other: PrecisionResult) -> None:
        """Figures of the same file under another runtime; its limit breaks fail this precision too."""
        self.under[other.runtime] = other.to_dict()
        self.failures += [f"under {other.runtime}: {failure}" for failure in other.failures]

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None

    def set_diffs(self, diffs: dict[str, OutputDiff]) -> None:
        self.outputs = {name: asdict(d) for name, d in diffs.items()}
        self.max_abs_diff = max(d.max_abs_diff for d in diffs.values())
        self.mean_abs_diff = max(d.mean_abs_diff for d in diffs.values())
        self.rel_error = max(d.rel_error for d in diffs.values())

    def set_metrics(self, metrics: dict[str, dict[str, float]], reference: dict[str, float]) -> None:
        patch = metrics["patch"]
        self.dice, self.pattern_accuracy = patch["dice"], patch["pattern_accuracy"]
        self.intensity_accuracy = patch["intensity_accuracy"]
        self.changes = {name: patch[name] - reference[name] for name in TASK_METRICS}
        self.cells = {name: patch[name] for name in CELL_METRICS if name in patch}
        self.changes |= {name: value - reference.get(name, float("nan")) for name, value in self.cells.items()}
        self.image_level = {name: metrics["image"][name] for name in TASK_METRICS}

    def check(self, limits: Limits) -> None:
        """Record every limit this precision breaks (fp32 parity for fp32, task-metric drops for all)."""
        if self.precision == "fp32" and not self.rel_error <= limits.fp32_rel_error:
            self.failures.append(
                f"fp32 parity off: relative error {self.rel_error:.2e} > {limits.fp32_rel_error:g}"
            )
        allowed = limits.task_drops()
        allowed |= {name: limit for name, limit in (("aji", limits.aji_drop), ("miou", limits.miou_drop))
                    if name in self.cells}
        for name, limit in allowed.items():
            drop = 0.0 - self.changes.get(name, float("nan"))
            if not drop <= limit:
                self.failures.append(f"{name} drops by {drop:.4f} > {limit:g}")

    def to_dict(self) -> dict[str, Any]:
        """Its fields, the cell metrics (if any) flat beside dice, and `passed`."""
        data = asdict(self)
        data |= data.pop("cells")
        data["passed"] = self.passed
        return data


@dataclass
class ExportReport:
    """Everything `hep2edge export` did, in the order it did it."""

    out_dir: str
    checkpoint: str
    checkpoint_reason: str
    model_id: str
    contract: dict[str, Any]
    limits: dict[str, float]
    verification: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    precisions: dict[str, PrecisionResult] = field(default_factory=dict)
    simplification: str = ""
    tensorrt: dict[str, Any] = field(default_factory=dict)
    whole_field: dict[str, Any] = field(default_factory=dict)  # export/field_check.FieldCheck.to_dict(); {}: not run
    machine: dict[str, str] = field(default_factory=lambda: {
        "host": platform.node(), "cpu": platform.processor() or platform.machine(), "python": platform.python_version()
    })

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.precisions.values())

    def failures(self) -> list[str]:
        lines = [f"{p}: {f}" for p, r in self.precisions.items() for f in r.failures]
        return lines + [f"{p}: {r.error}" for p, r in self.precisions.items() if r.error]

    def explanations(self) -> list[str]:
        """Why some of the failures happen on this machine (a precision's OPENVINO_NOTE), one line each."""
        return [f"{p}, why: {r.notes[OPENVINO_NOTE]}" for p, r in self.precisions.items() if OPENVINO_NOTE in r.notes]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["precisions"] = {name: r.to_dict() for name, r in self.precisions.items()}
        data["passed"] = self.passed
        data["failures"] = self.failures()
        return _finite(data)


def _finite(value: Any) -> Any:
    """NaN/inf -> None so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _sci(value: float) -> str:
    return f"{value:.2e}" if math.isfinite(value) else "-"


def _others(report: ExportReport) -> set[str]:
    return {runtime for r in report.precisions.values() for runtime in r.under}


def _cell_metrics(report: ExportReport) -> tuple[str, ...]:
    """The cell metrics the report carries (those of the PyTorch reference); () for a model without dense heads."""
    return tuple(name for name in CELL_METRICS if name in report.reference)


def _row(name: str, runtime: str, file: str | None, figures: dict[str, Any], ok: bool,
         cell_metrics: tuple[str, ...] = ()) -> str:
    """One table row: a precision's figures under one runtime."""
    cells = [name, runtime, f"`{file}`" if file else "-", _sci(figures.get("max_abs_diff", float("nan"))),
             _sci(figures.get("mean_abs_diff", float("nan")))]
    changes = figures.get("changes", {})
    cells += [f"{_fmt(figures.get(m))} ({_fmt(changes.get(m), signed=True)})" for m in (*TASK_METRICS, *cell_metrics)]
    cells.append("yes" if ok else "**no**")
    return "| " + " | ".join(cells) + " |"


def _reference_cells(report: ExportReport) -> str:
    """', AJI 0.71, PQ ..., mIoU ...' of the reference: cells from mask + distance per tile; '' without heads."""
    return "".join(f", {CELL_LABELS[m]} {_fmt(report.reference.get(m))}" for m in _cell_metrics(report))


def _table_head(cell_metrics: tuple[str, ...]) -> list[str]:
    """The precision table's header and rule, with a column per cell metric the report carries."""
    columns = ["precision", "runtime", "file", "max abs diff", "mean abs diff", "Dice (Δ)", "pattern acc (Δ)",
               "intensity acc (Δ)", *(f"{CELL_LABELS[m]} (Δ)" for m in cell_metrics), "ok"]
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def to_markdown(report: ExportReport) -> str:
    """Human-readable tables of the report."""
    lines = [
        f"# Export report — {report.model_id}", "",
        f"- checkpoint: `{report.checkpoint}` ({report.checkpoint_reason})",
        f"- verification: {report.verification.get('source', '-')}, {report.verification.get('tiles', 0)} tiles",
        f"- calibration: {report.calibration.get('source', 'not needed')}",
        f"- machine: {report.machine['host']} ({report.machine['cpu']}); runtimes: "
        f"{', '.join(sorted({r.runtime for r in report.precisions.values()} | _others(report))) or '-'} (CPU)",
        f"- result: {'PASSED' if report.passed else 'FAILED'}", "",
        "Patch level; changes are against PyTorch fp32 "
        f"(Dice {_fmt(report.reference.get('dice'))}, pattern acc {_fmt(report.reference.get('pattern_accuracy'))}, "
        f"intensity acc {_fmt(report.reference.get('intensity_accuracy'))}{_reference_cells(report)}).", "",
        *_table_head(_cell_metrics(report)),
    ]
    for name, r in report.precisions.items():
        lines.append(_row(name, r.runtime, r.file, r.to_dict(), r.passed, _cell_metrics(report)))
        for runtime, figures in r.under.items():
            lines.append(_row(name, runtime, r.file, figures, not figures.get("failures"), _cell_metrics(report)))
    lines += ["", "Per output (max / mean abs diff):", ""]
    for name, r in report.precisions.items():
        per = ", ".join(f"{o} {_sci(d['max_abs_diff'])} / {_sci(d['mean_abs_diff'])}" for o, d in r.outputs.items())
        lines.append(f"- {name}: {per or '-'}")
        if r.notes:
            lines.append(f"  - notes: {', '.join(f'{k}={v}' for k, v in r.notes.items())}")
    if report.failures():
        lines += ["", "## Failures", ""] + [f"- {f}" for f in report.failures()]
        lines += [f"- {line}" for line in report.explanations()]
    if report.whole_field:
        lines += ["", "## Whole field (`--inference field`)", "", *_whole_field_lines(report.whole_field)]
    if report.tensorrt:
        lines += ["", "## TensorRT", "", f"- {report.tensorrt.get('status', '')}"]
        lines += [f"- `{cmd}`" for cmd in report.tensorrt.get("trtexec", [])]
        lines += [f"- engine: `{e}`" for e in report.tensorrt.get("engines", [])]
    return "\n".join(lines) + "\n"


def field_check_line(check: Any) -> str:
    """One line on a FieldCheck (or its dict): whether this model may analyse whole fields, and why."""
    data = check if isinstance(check, dict) else check.to_dict()
    if data["skipped"]:
        return f"whole field not checked: {data['skipped']}"
    height, width = data["largest"]
    shared = (f"mask Dice {_fmt(data['mask_dice_vs_tiles'], 3)} against tiles, image patterns agree on "
              f"{100 * data['pattern_agreement']:.0f} % of {data['images']} images up to {width} x {height}")
    if data["within_limits"]:
        return f"whole field within the verification limits ({shared}): --inference field may be used"
    return (f"whole field outside the verification limits ({'; '.join(data['failures'])}; {shared}): "
            "keep --inference tiles (the default) for this model")


def _whole_field_lines(data: dict[str, Any]) -> list[str]:
    """The whole-field section: the verdict line, then tiles against whole field per task metric."""
    lines = [f"- {field_check_line(data)}", f"- runtime: {data['runtime']}, fp32 file, patch level against the truth"]
    if data["skipped"]:
        return lines
    lines += ["", "| metric | tiles | whole field | Δ |", "|---|---|---|---|"]
    tiles, whole = data["tile_metrics"], data["field_metrics"]
    lines += [f"| {m} | {_fmt(tiles[m])} | {_fmt(whole[m])} | {_fmt(whole[m] - tiles[m], signed=True)} |"
              for m in TASK_METRICS]
    return lines


def write_report(report: ExportReport, out_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = Path(out_dir) / EXPORT_REPORT_JSON, Path(out_dir) / EXPORT_REPORT_MD
    atomic_write_json(json_path, report.to_dict())
    atomic_write_text(md_path, to_markdown(report))
    return json_path, md_path
