"""--resume: a run killed (SIGKILL) after an epoch ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hep2edge.train.config import TrainConfig  # noqa: E402
from hep2edge.train.run import run_training  # noqa: E402

EPOCHS = 4
ARGS = ["--encoder", "mobilenet_v2", "--decoder-channels", "32,16,16,8,8", "--tile", "64", "--batch-size", "8",
        "--folds", "3", "--fold", "0", "--epochs", str(EPOCHS), "--lr", "1e-3", "--augment",
        "--weighting", "gradnorm", "--scheduler", "cosine", "--seed", "3", "--no-progress"]


def _config(data: Path, out: Path, resume: bool = False) -> TrainConfig:
    return TrainConfig(data=data, out=out, encoder="mobilenet_v2", decoder_channels=(32, 16, 16, 8, 8), tile=64,
                       batch_size=8, folds=3, fold=0, epochs=EPOCHS, lr=1e-3, augment=True, weighting="gradnorm",
                       scheduler="cosine", seed=3, progress=False, resume=resume)


def _kill_after_first_epoch(data: Path, out: Path) -> int:
    """Start `hep2edge train` and SIGKILL it as soon as its first epoch state is on disk."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "hep2edge", "train", "--data", str(data), "--out", str(out),
                                *ARGS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "fold_0" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while not last.is_file():
            if process.poll() is not None:
                pytest.fail(f"training exited early: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("no epoch finished within 240 s")
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    state = torch.load(last, map_location="cpu", weights_only=True)
    return int(state["progress"]["next_epoch"])


def _rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(path.open())]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_metrics(synth_tiny: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_training(_config(synth_tiny, straight))

    reached = _kill_after_first_epoch(synth_tiny, killed)
    assert 1 <= reached < EPOCHS, "the run must be killed part-way"
    run_training(_config(synth_tiny, killed, resume=True))

    for name in ("best.pt", "last.pt"):
        a = torch.load(straight / "fold_0" / name, map_location="cpu", weights_only=True)
        b = torch.load(killed / "fold_0" / name, map_location="cpu", weights_only=True)
        weights = "state_dict" if name == "best.pt" else "model"
        assert a[weights].keys() == b[weights].keys()
        for key in a[weights]:
            assert torch.equal(a[weights][key], b[weights][key]), f"{name}: {key} differs after resume"
        if name == "last.pt":
            assert torch.equal(a["weighting"]["module"]["weights"], b["weighting"]["module"]["weights"])
            assert a["progress"]["next_epoch"] == b["progress"]["next_epoch"] == EPOCHS
    assert _rows(straight / "metrics.csv") == _rows(killed / "metrics.csv")


def test_a_checkpoint_is_readable_by_the_other_users_of_a_shared_workstation(tmp_path: Path) -> None:
    """Saved through hep2edge.atomic: the mode a plain open() gives under the umask, not mkstemp's 0600."""
    from hep2edge.train.checkpoint import save_checkpoint

    previous = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "ckpt.pt", {"format": "x"})
    finally:
        os.umask(previous)
    assert (tmp_path / "ckpt.pt").stat().st_mode & 0o777 == 0o644
