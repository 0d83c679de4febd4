"""Multi-process training: `torchrun` with 2 CPU processes (gloo), DistributedDataParallel, rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hep2edge.train.checkpoint import load_checkpoint  # noqa: E402


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_rank0_writes(synth_tiny: Path, tmp_path: Path) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "hep2edge", "train", "--data", str(synth_tiny), "--out", str(out), "--device", "cpu",
               "--encoder", "mobilenet_v2", "--decoder-channels", "32,16,16,8,8", "--tile", "64",
               "--batch-size", "8", "--folds", "3", "--fold", "1", "--epochs", "2", "--lr", "1e-3",
               "--weighting", "gradnorm", "--no-progress"]
    # own process group, so a hang kills torchrun *and* its workers instead of orphaning them
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("torchrun with 2 processes did not finish within 300 s")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert [f["fold"] for f in summary["folds"]] == [1]
    assert result.stdout.count("fold 1 epoch   2/2") == 1, "only rank 0 prints the epoch summary"
    loaded = load_checkpoint(out / summary["folds"][0]["checkpoint"])
    assert not any(name.startswith("module.") for name in loaded.model.state_dict())  # saved unwrapped
    assert sorted(p.name for p in (out / "fold_1").iterdir()) == ["best.pt", "last.pt"]
