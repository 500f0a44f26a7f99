"""Training runs resumed after a SIGKILL end with the weights of an uninterrupted run, and
the same step sequence split over micro-batches or DDP processes trains the same weights."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT, run_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {
    "backbone": "iresnet18",
    "width": 0.125,
    "embedding_size": 32,
    "head": "arcface",
    "s": 16.0,
    "epochs": 12,
    "batch_size": 4,
    "lr": 0.02,
    "warmup_epochs": 1.0,
    "device": "cpu",
    "num_workers": 0,
    "deterministic": True,
    "checkpoint_every": 5,
}


def _params(repo_root: Path, folder: Path, **train: object) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["train"].update({**TINY, **train})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _train_args(data: Path) -> list[str]:
    return ["--params", "params.yaml", "--data", str(data), "--out", "models"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "models" / "backbone.pt", weights_only=True)["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(repo_root: Path, tiny_aligned: Path, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("uninterrupted")
    _params(repo_root, folder)
    proc = run_stage("train", *_train_args(tiny_aligned), cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert not (folder / "checkpoints" / "train").exists()  # removed once the model is saved
    return _weights(folder)


def _kill_after_checkpoint(folder: Path, data: Path, step: int) -> list[str]:
    """Start training in ``folder``, SIGKILL it once a checkpoint of ``step`` or later exists."""
    cmd = [sys.executable, "-m", "stages.train", *_train_args(data)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
    checkpoint = folder / "checkpoints" / "train" / "rank000.pt"
    deadline, done = time.monotonic() + 300, 0
    while done < step and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError, EOFError, RuntimeError):  # not yet / torn
            done = torch.load(checkpoint, weights_only=True)["step"]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    return cmd


def test_sigkill_then_resume_ends_with_the_same_weights(
    repo_root: Path, tiny_aligned: Path, tmp_path: Path, uninterrupted
) -> None:
    _params(repo_root, tmp_path)
    _kill_after_checkpoint(tmp_path, tiny_aligned, 20)  # of 72 steps
    second = run_stage("train", *_train_args(tiny_aligned), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed from the checkpoint of step" in second.stderr
    assert _same(_weights(tmp_path), uninterrupted)


def test_changed_params_do_not_resume_a_foreign_checkpoint(
    repo_root: Path, tiny_aligned: Path, tmp_path: Path
) -> None:
    _params(repo_root, tmp_path)
    _kill_after_checkpoint(tmp_path, tiny_aligned, 10)
    _params(repo_root, tmp_path, epochs=2, lr=0.01)
    proc = run_stage("train", *_train_args(tiny_aligned), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resumed" not in proc.stderr


def _parameters(folder: Path) -> dict[str, torch.Tensor]:
    """The trained parameters (not BN running statistics: each DDP rank keeps its own)."""
    from arcflow.models.saving import load_backbone

    model = load_backbone(folder / "models" / "backbone.pt")
    return {name: p.detach() for name, p in model.named_parameters()}


def test_ddp_on_two_processes_matches_one_process_accumulating(
    repo_root: Path, tiny_aligned: Path, tmp_path: Path
) -> None:
    """The same global batch of 8 per step: one process as 2 micro-batches of 4, or 2 DDP
    processes (torchrun, gloo) of 4 each; BatchNorm normalises over 4 images either way.
    9 steps with warmup, momentum, weight decay and clipping."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _params(repo_root, single, epochs=3, grad_accumulation=2)
    _params(repo_root, ddp, epochs=3, devices=2)
    one_core = [
        "taskset",
        "-c",
        "0",
        sys.executable,
        "-m",
        "stages.train",
    ]  # 1 thread, as each rank
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    proc = subprocess.run(
        [*one_core, *_train_args(tiny_aligned)], cwd=single, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    proc = run_stage("train", *_train_args(tiny_aligned), cwd=ddp)
    assert proc.returncode == 0, proc.stderr
    assert "2 process(es)" in proc.stderr
    a, b = _parameters(single), _parameters(ddp)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    # bit for bit: halving is exact, so all-reducing 2 gradients and accumulating 2 halves agree
    # (given the same CPU threads per process: the kernels' reductions depend on it)
    assert worst == 0.0, worst


def test_verification_and_system_metrics_while_training(
    repo_root: Path, tiny_aligned: Path, tmp_path: Path
) -> None:
    import csv
    import json

    import mlflow

    _params(repo_root, tmp_path, epochs=2, val_every=4, deterministic=False)  # 12 steps
    evals = tiny_aligned.parent / "eval"
    env = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    proc = run_stage("train", *_train_args(tiny_aligned), "--val", evals, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "plots" / "train_val.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["4", "8", "12"]
    assert set(rows[0]) == {"step", "agedb_30", "cfp_fp", "lfw"}
    assert all(0.0 <= float(r["lfw"]) <= 1.0 for r in rows)
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert metrics["val_lfw"] == float(rows[-1]["lfw"])
    run_id = json.loads((tmp_path / "models" / "mlflow_run.json").read_text())["run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run_id, "val.lfw")] == [4, 8, 12]
    logged = client.get_run(run_id).data.metrics
    assert "system/cpu_utilization_percentage" in logged  # system metrics sampled while training
