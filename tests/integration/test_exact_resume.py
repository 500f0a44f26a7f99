"""Exact resume for every setting that can be exact on CPU: a run interrupted right after a
checkpoint and resumed ends bit-identical to the uninterrupted run, with dropout, loader
workers and gradient accumulation (each of which once broke it: the loader's base seed was
drawn from the global generator that dropout uses, after the restored state)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arcflow.config import TrainParams
from arcflow.data.faces import AlignedFaceDataset
from arcflow.data.transforms import train_augmentation
from arcflow.train.loop import train_model
from tests.integration.test_train_runs import TINY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = {  # test_train_runs' tiny run, shorter, with augmentations that draw random numbers
    **TINY,
    "embedding_size": 16,
    "epochs": 4,
    "checkpoint_every": 3,
    "augment": {"hflip": 0.5, "color": 0.3},
}
SETTINGS = {
    "dropout 0.3": {"dropout": 0.3},
    "2 loader workers": {"num_workers": 2},
    "accumulation 2": {"batch_size": 2, "grad_accumulation": 2},
}


class Interrupted(Exception):
    """Stands in for a kill right after the checkpoint of a step."""


def _train(cfg: TrainParams, data: Path, checkpoints: Path, stop_at: int | None = None):
    def log(step: int, _row: dict[str, float]) -> None:
        if step == stop_at:
            raise Interrupted

    augment = train_augmentation(**cfg.augment.model_dump())
    dataset = AlignedFaceDataset(data, augment=augment)
    return train_model(
        cfg, dataset, dataset.num_classes, checkpoints=checkpoints, fingerprint="f", log=log,
        log_every=1,
    )  # fmt: skip


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_a_resumed_run_is_the_uninterrupted_run(
    setting: str, tiny_aligned: Path, tmp_path: Path
) -> None:
    cfg = TrainParams(**{**BASE, **SETTINGS[setting]})
    whole = _train(cfg, tiny_aligned, tmp_path / "whole")
    with pytest.raises(Interrupted):
        _train(cfg, tiny_aligned, tmp_path / "cut", stop_at=6)  # after the checkpoint of 6
    resumed = _train(cfg, tiny_aligned, tmp_path / "cut")
    assert resumed.resumed_from == 6
    a, b = whole.backbone.state_dict(), resumed.backbone.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), setting
