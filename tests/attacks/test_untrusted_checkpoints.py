"""Attack: a pickle planted where ArcFlow reads weights (a training checkpoint to resume, a
backbone for evaluate and export). Each is refused in one line without running anything, and
the outputs already there are left as they were."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from arcflow.errors import DataFormatError, TrainingError
from arcflow.models.saving import load_backbone
from arcflow.train import checkpoint
from tests.conftest import run_stage

pytestmark = [pytest.mark.attack, pytest.mark.integration]


class Payload:
    """Unpickled without ``weights_only``, it creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": "any", "step": 1, "rng": Payload(marker)}, path)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_checkpoints_round_trip_every_generator_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    checkpoint.save(tmp_path, 0, {"fingerprint": "f", "step": 7})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    state = checkpoint.load(tmp_path, 0, "f")  # weights_only=True inside
    assert state is not None and state["step"] == 7
    checkpoint.set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_a_planted_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    _plant(checkpoint.rank_file(tmp_path / "ckpt", 0), marker)
    with pytest.raises(TrainingError, match="not a tensors-only checkpoint, refused") as err:
        checkpoint.load(tmp_path / "ckpt", 0, "any")
    assert "\n" not in str(err.value) and not marker.exists()


def test_train_refuses_a_planted_resume_checkpoint_and_keeps_the_last_model(
    repo_root: Path, tiny_aligned: Path, tmp_path: Path
) -> None:
    """`checkpoints/train/rank000.pt` planted before `dvc repro train`: the stage stops with
    one line, nothing in the file ran, the previous model and the plant are untouched."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["train"].update(
        backbone="iresnet18", width=0.125, embedding_size=32, epochs=1, batch_size=8,
        device="cpu", num_workers=0, checkpoint_every=1,
    )  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    previous = tmp_path / "models" / "backbone.pt"
    previous.parent.mkdir()
    previous.write_bytes(b"the model of the last good run")
    marker = tmp_path / "executed"
    _plant(tmp_path / "checkpoints" / "train" / "rank000.pt", marker)
    before = _snapshot(tmp_path)
    proc = run_stage(
        "train", "--params", "params.yaml", "--data", tiny_aligned, "--out", "models",
        cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path.parent}/attack.db"},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "not a tensors-only checkpoint, refused without running it" in _one_error_line(
        proc.stderr
    )
    assert not marker.exists()
    after = _snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before  # the plant and the model unchanged
    # nothing else written but the stage's own note of its MLflow run, beside the checkpoints
    assert set(after) - set(before) <= {"checkpoints/train/mlflow_run.json"}


@pytest.mark.parametrize("stage", ["evaluate", "export"])
def test_a_backbone_that_is_not_weights_is_refused_by_each_consumer(
    stage: str, repo_root: Path, tiny_aligned: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "executed"
    torch.save({"name": "iresnet18", "kwargs": {}, "state_dict": Payload(marker)},
               tmp_path / "backbone.pt")  # fmt: skip
    with pytest.raises(DataFormatError, match="refused without running it"):
        load_backbone(tmp_path / "backbone.pt")
    args = {
        "evaluate": ["--data", tiny_aligned.parent / "eval", "--model", "backbone.pt"],
        "export": ["--model", "backbone.pt", "--run", "r.json", "--out", "m.onnx"],
    }[stage]
    before = _snapshot(tmp_path)
    proc = run_stage(stage, "--params", repo_root / "params.yaml", *args, cwd=tmp_path)
    assert proc.returncode == 1
    assert "backbone.pt: not a tensors-only checkpoint" in _one_error_line(proc.stderr)
    assert not marker.exists() and _snapshot(tmp_path) == before
