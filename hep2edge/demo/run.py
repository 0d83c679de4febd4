"""`run_demo(config) -> DemoResult`: synth -> train -> export -> watch a scanner folder -> report.html."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from hep2edge.demo import steps
from hep2edge.demo.config import DemoConfig
from hep2edge.demo.outcome import Outcome, collect_outcome
from hep2edge.demo.report import ReportInputs, build_report
from hep2edge.demo.steps import DemoPaths
from hep2edge.errors import Hep2EdgeError
from hep2edge.workspace import resolve_out_dir, write_resolved_config


@dataclass
class DemoResult:
    out: Path
    outcome: Outcome
    report: Path
    step_seconds: dict[str, float]
    export_passed: bool
    artefacts: dict[str, Path]


class StepClock:
    """Announces each step, times it, and keeps the seconds per step."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total = console, total
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        number = len(self.seconds) + 1
        self.console.rule(f"[bold]{number}/{self.total} {name}[/bold]: {what}", align="left")
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        self.console.print(f"[dim]{name} took {self.seconds[name]:.0f} s[/dim]")


def _checkpoint(summary: dict[str, Any], train_dir: Path) -> Path:
    relative = summary["folds"][0].get("checkpoint")
    if not relative:
        raise Hep2EdgeError(f"{train_dir}: training wrote no checkpoint (see metrics.csv)")
    return train_dir / relative


def _artefacts(paths: DemoPaths, report: Path) -> dict[str, Path]:
    return {
        "this page": report,
        "training data (synthetic)": paths.data,
        "training run: checkpoints, metrics.csv, plots, summary": paths.train,
        "ONNX models (fp32, int8) + export_report": paths.export,
        "fresh fields and their truth": paths.fresh,
        "the watched scanner folder": paths.inbox,
        "results: <stem>.json (with cells), masks, overlays, instance labels, results.csv, results.db": paths.results,
    }


def run_demo(config: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run every stage on synthetic data in a fresh numbered folder; returns where everything is."""
    console = console or Console(highlight=False)
    paths = DemoPaths(resolve_out_dir(config.out, "demo"))
    config = config.replace(out=paths.root)
    write_resolved_config(paths.root, config)
    console.print(f"demo folder: {paths.root}", highlight=False, markup=False)
    clock = StepClock(console, 4)
    with clock.step("synth", f"{config.patients} training patients x {config.images_per_patient} fields, "
                             f"{config.fresh_patients} fresh patients for the scanner"):
        steps.synthesize(config, paths)
    device = steps.training_device(config.device)
    heads = " + ".join(name for name, on in (("distance", config.instances), ("pattern-map", config.pattern_map)) if on)
    with clock.step("train", f"{config.encoder} U-Net{f' with {heads} heads' if heads else ''}, "
                             f"{config.epochs} epochs on {device}"):
        summary = steps.train(config, paths, console)
    with clock.step("export", "fp32 and int8 ONNX, each verified on held-out patients"):
        report = steps.export(config, paths, _checkpoint(summary, paths.train), console)
    with clock.step("watch", f"the scanner drops {config.fresh_images} fields into {paths.inbox}; "
                             f"hep2edge watch analyses each as it lands ({config.inference} inference)"):
        service, scanner = steps.watch_inbox(config, paths, console)
    outcome = collect_outcome(paths.fresh, paths.results, scanner.landed)
    page = paths.root / "report.html"
    artefacts = _artefacts(paths, page)
    build_report(ReportInputs(
        title="hep2edge demo", device=device, backend=service.backend, step_seconds=clock.seconds,
        outcome=outcome, train_summary=summary, metrics_csv=paths.train / "metrics.csv",
        export_rows=[r.to_dict() for r in report.precisions.values()], artefacts=artefacts,
    ), paths.root)
    return DemoResult(paths.root, outcome, page, clock.seconds, report.passed, artefacts)
