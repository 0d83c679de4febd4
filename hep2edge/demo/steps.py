"""The demo's four steps, each the library call behind its command: synth, train, export, watch.

Nothing here is special to the demo: the same functions run `hep2edge synth`, `hep2edge train`,
`hep2edge export` and `hep2edge watch`; only the sizes come from DemoConfig.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from hep2edge.demo.config import DEMO_PRECISIONS, DemoConfig
from hep2edge.demo.scanner import ScannerDrop, ScannerFedSource
from hep2edge.errors import Hep2EdgeError
from hep2edge.workspace import resolve_out_dir


@dataclass(frozen=True)
class DemoPaths:
    """Where each step writes, all under the demo's folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def fresh(self) -> Path:
        return self.root / "fresh"

    @property
    def inbox(self) -> Path:
        return self.root / "scanner_inbox"

    @property
    def results(self) -> Path:
        return self.root / "results"


def synthesize(config: DemoConfig, paths: DemoPaths) -> None:
    """Training data, and fresh patients from another seed for the scanner to deliver."""
    from hep2edge.synth.writer import SynthConfig, synthesize_dataset

    synthesize_dataset(SynthConfig(paths.data, config.patients, config.images_per_patient, config.size, config.seed))
    synthesize_dataset(SynthConfig(paths.fresh, config.fresh_patients, config.fresh_images_per_patient,
                                   config.fresh_size, config.seed + 1000))


def training_device(requested: str) -> str:
    """What `--device auto` means here, said before training starts."""
    import torch

    if requested != "auto":
        return requested
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu (no CUDA GPU found)"


def train(config: DemoConfig, paths: DemoPaths, console: Console) -> dict[str, Any]:
    """One fold of patient-wise 5-fold CV, with the distance and pattern-map heads; returns summary.json."""
    from hep2edge.cli.reporter import RichReporter
    from hep2edge.train.config import TrainConfig
    from hep2edge.train.run import run_training

    train_config = TrainConfig(
        data=paths.data, out=paths.train, encoder=config.encoder, decoder_channels=config.decoder_channels,
        pool_levels=config.pool_levels, instances=config.instances, pattern_map=config.pattern_map,
        tile=config.tile, augment=True, epochs=config.epochs,
        batch_size=config.batch_size, lr=config.lr, folds=config.folds, fold=0, seed=config.seed,
        device=config.device, progress=config.progress,
    )
    summary_path = run_training(train_config, RichReporter(console, bars=config.progress))
    summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
    return summary


def export(config: DemoConfig, paths: DemoPaths, checkpoint: Path, console: Console) -> Any:
    """fp32 and int8 ONNX, each verified against PyTorch on the held-out patients; returns the ExportReport."""
    from hep2edge.export.config import ExportConfig, Int8Options
    from hep2edge.export.pipeline import run_export
    from hep2edge.progress import LineReporter

    export_config = ExportConfig(
        checkpoint=checkpoint, out=paths.export, precisions=DEMO_PRECISIONS, val_images=config.val_images,
        int8=Int8Options(calib_images=config.calib_images, seed=config.seed),
    )
    indented = LineReporter(lambda line: console.print(f"  {line}", highlight=False, markup=False))
    return run_export(export_config, indented)


def fresh_images(paths: DemoPaths) -> list[Path]:
    """The fresh fields in manifest order (patient by patient, as a scanner would acquire them)."""
    from hep2edge.data.manifest import load_dataset

    return [record.image for record in load_dataset(paths.fresh).records]


def watch_inbox(config: DemoConfig, paths: DemoPaths, console: Console) -> tuple[Any, ScannerDrop]:
    """`hep2edge watch --overlay --instance-labels --inference <config.inference>` on the inbox (newest model of the
    export, auto backend, `--cells auto`: cells wherever the model has a distance head) while the scanner drops
    files."""
    from hep2edge.cli.reporter import RichReporter
    from hep2edge.runtime.backends.select import select_model
    from hep2edge.runtime.service import run_service
    from hep2edge.runtime.settings import RunConfig, SpecimenConfig
    from hep2edge.runtime.sources.watch import WatchConfig
    from hep2edge.runtime.watch_restart import restart_source

    images = fresh_images(paths)
    chosen = select_model(paths.export, "auto")
    console.print(f"  model: {chosen.model.name} -> backend {chosen.backend} ({chosen.reason})", highlight=False,
                  markup=False)
    paths.inbox.mkdir(parents=True, exist_ok=True)
    watch_config = WatchConfig(paths.inbox, settle_ms=200, existing=True, max_files=len(images))
    run_config = RunConfig(
        command="watch", out=resolve_out_dir(paths.results, "watch"), model=chosen.model, backend=chosen.backend,
        model_reason=chosen.reason, inference=config.inference, overlay=True, instance_labels=True,
        specimens=SpecimenConfig(images=config.fresh_images_per_patient), source={"folder": str(paths.inbox)},
    )
    scanner = ScannerDrop(images, paths.inbox, config.drop_interval_s).start()
    try:
        summary = run_service(run_config, lambda journal: ScannerFedSource(restart_source(journal, watch_config),
                                                                            scanner), RichReporter(console))
    finally:
        scanner.stop()
    if scanner.error is not None:
        raise Hep2EdgeError(f"the simulated scanner could not write into {paths.inbox}: {scanner.error}")
    return summary, scanner
