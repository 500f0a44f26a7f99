"""Every loss configuration of the paper's comparison trains through the same loop: margin
heads with SphereFace's annealing, the extra Intra/Inter/Triplet terms (Triplet with P×K
batches), and Partial FC, in one process and in two DDP processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from arcflow.config import TrainParams
from arcflow.data.faces import AlignedFaceDataset
from arcflow.heads.margins import MarginHead
from arcflow.train.identity_batches import IdentityBatchSampler
from arcflow.train.loop import FaceModel, make_head, train_model
from arcflow.train.sampling import StepPlan
from arcflow.train.schedules import sphereface_lambda
from tests.conftest import run_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = {
    "backbone": "iresnet18",
    "width": 0.25,
    "embedding_size": 32,
    "s": 16.0,
    "epochs": 4,
    "batch_size": 4,
    "lr": 0.02,
    "device": "cpu",
    "num_workers": 0,
    "checkpoint_every": 0,
}


def _train(data: Path, **overrides: object):
    cfg = TrainParams(**{**BASE, **overrides})
    dataset = AlignedFaceDataset(data)
    return train_model(cfg, dataset, dataset.num_classes, log_every=1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"head": "norm_softmax", "extra_losses": ["intra", "inter"]},
        {"head": "arcface", "extra_losses": ["intra"]},
        {"head": "arcface", "extra_losses": ["triplet"], "images_per_identity": 2},
        {"head": "none", "extra_losses": ["triplet"], "images_per_identity": 2},
        {"head": "sphereface", "m1": 1.35},
        {"head": "combined", "m1": 0.9, "m2": 0.4, "m3": 0.15},
        {"head": "arcface", "partial_fc": True, "sample_rate": 0.5},
        {"head": "cosface", "m": 0.35, "precision": "bf16"},
    ],
    ids=lambda o: "+".join(str(v) for v in o.values()),
)
def test_loss_configuration_trains(tiny_aligned: Path, overrides: dict) -> None:
    result = _train(tiny_aligned, **overrides)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 4 * 24 // 4 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6  # single steps of 4 images are noisy
    assert last < first, (first, last)


def test_identity_batches_put_k_images_of_p_identities_in_each_micro_batch(
    tiny_aligned: Path,
) -> None:
    dataset = AlignedFaceDataset(tiny_aligned)
    plan = StepPlan(len(dataset), 4, 1, 1, 0, IdentityBatchSampler(dataset.labels, 2, 2, seed=0))
    for step in range(plan.steps_per_epoch * 2):
        (batch,) = plan.micro_batches(step, 0)
        labels = [dataset.labels[i] for _, i in batch]
        assert sorted(labels.count(x) for x in set(labels)) == [2, 2]


def test_sphereface_blend_follows_the_lambda_schedule(tiny_aligned: Path) -> None:
    assert sphereface_lambda(0, 1000.0, 0.12, 1.0, 5.0) == 1000.0
    assert sphereface_lambda(100, 1000.0, 0.12, 1.0, 5.0) == pytest.approx(1000 / 13)
    assert sphereface_lambda(10**6, 1000.0, 0.12, 1.0, 5.0) == 5.0
    head = MarginHead(4, 3, s=1.0, m1=1.35)
    emb, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    plain = head(emb, labels)
    head.blend = 5.0
    blended = head(emb, labels)
    cos = head.cosine(emb).gather(1, labels[:, None])
    expected = (5.0 * cos + plain.gather(1, labels[:, None])) / 6.0
    torch.testing.assert_close(blended.gather(1, labels[:, None]), expected)


def test_partial_fc_head_holds_no_optimiser_parameters() -> None:
    cfg = TrainParams(**{**BASE, "head": "arcface", "partial_fc": True, "sample_rate": 0.1})
    head = make_head(cfg, 50)
    assert head is not None and list(head.parameters()) == []
    model = FaceModel(torch.nn.Linear(2, 2), head)
    assert "head.weight" in model.state_dict()  # the centres are checkpointed all the same


def test_partial_fc_in_two_ddp_processes(repo_root: Path, tiny_aligned: Path, tmp_path: Path):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["train"].update(BASE, epochs=2, devices=2, partial_fc=True, sample_rate=0.5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ("--params", "params.yaml", "--data", tiny_aligned, "--out", "models")
    proc = run_stage("train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 process(es)" in proc.stderr and (tmp_path / "models" / "backbone.pt").is_file()


class _PoisonedDataset(AlignedFaceDataset):
    """One image made of NaNs: the step that draws it has a NaN loss."""

    def __getitem__(self, i: int):
        image, label = super().__getitem__(i)
        return (torch.full_like(image, float("nan")), label) if i == 7 else (image, label)


def test_nan_loss_stops_before_the_bad_update_and_keeps_the_checkpoint(
    tiny_aligned: Path, tmp_path: Path
) -> None:
    from arcflow.errors import TrainingError
    from arcflow.train import checkpoint

    cfg = TrainParams(**{**BASE, "checkpoint_every": 1})
    dataset = _PoisonedDataset(tiny_aligned)
    with pytest.raises(TrainingError, match=r"loss became nan at step (\d+); the last good") as err:
        train_model(cfg, dataset, dataset.num_classes, checkpoints=tmp_path, fingerprint="f")
    failed_at = int(err.value.args[0].split("at step ")[1].split(";")[0])
    state = checkpoint.load(tmp_path, 0, "f")
    assert state is not None and state["step"] == failed_at  # every good step is kept
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_compiled_backbone_trains_like_the_eager_one(tiny_aligned: Path) -> None:
    """``train.compile``: the same steps through torch.compile (inductor) give the same losses
    up to float rounding, which training then amplifies (measured: 1e-5 at step 1, 2e-4 at
    step 2, 0.2 by step 5), so the first two steps are compared, in fp32 (bf16 rounds where
    inductor's fused kernels do not)."""
    eager = [r["loss"] for r in _train(tiny_aligned, epochs=1, precision="fp32").history]
    compiled = [
        r["loss"] for r in _train(tiny_aligned, epochs=1, precision="fp32", compile=True).history
    ]
    assert len(compiled) == len(eager) == 6 and all(math.isfinite(x) for x in compiled)
    assert abs(eager[0] - compiled[0]) < 1e-4 and abs(eager[1] - compiled[1]) < 2e-3
