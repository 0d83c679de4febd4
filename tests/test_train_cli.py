"""`hep2edge train`: defaults from hep2edge.yaml, numbered run folders, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from typer.testing import CliRunner  # noqa: E402

from hep2edge.cli.app import app  # noqa: E402


def test_bare_train_takes_its_dataset_from_hep2edge_yaml(synth_tiny: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hep2edge.yaml").write_text(
        f"train:\n  data: {synth_tiny}\n  encoder: mobilenet_v2\n  decoder-channels: 32,16,16,8,8\n"
        "  tile: 64\n  epochs: 1\n  folds: 3\n  fold: '2'\n  batch-size: 8\n  weighting: uncertainty\n"
        "  normalization: minmax\n  progress: false\n"
    )
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "train" / "1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"][0]["fold"] == 2 and summary["config"]["weighting"] == "uncertainty"
    checkpoint = torch.load(run / "fold_2" / "best.pt", map_location="cpu", weights_only=True)
    assert checkpoint["contract"]["normalization"]["mode"] == "minmax"
    assert "held-out folds [2]" in result.output


@pytest.mark.parametrize("args, message", [
    ([], "pass --data DIR or set `train: {data: DIR}` in hep2edge.yaml"),
    (["--data", "no/such/folder"], "--data no/such/folder: no such dataset folder"),
    (["--data", ".", "--fold", "x"], "--fold must be 'all' or a fold number"),
])
def test_unresolved_or_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hep2edge", "train", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for a run that cannot start"
