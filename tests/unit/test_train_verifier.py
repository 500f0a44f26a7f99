"""The verification the train stage runs while training: with the flip test (insightface's
callback) or without it (the CPU default's cheaper monitor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from arcflow.data.binpairs import load_bin, save_bin
from arcflow.data.transforms import encode_jpeg
from arcflow.evaluate.embed import embed_crops
from arcflow.evaluate.verification import evaluate_pairs
from arcflow.models import get_backbone
from stages.train import verifier

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("flip", [True, False])
def test_verifier_scores_each_bin_set_with_or_without_the_flip(
    flip: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    crops = [encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(40)]
    save_bin(tmp_path / "lfw.bin", crops, [i % 2 == 0 for i in range(20)])
    torch.manual_seed(0)
    model = get_backbone("iresnet18", width=0.125, embedding_size=32).eval()
    asked = []

    def spy(*args, **kwargs):
        asked.append(kwargs["flip"])
        return embed_crops(*args, **kwargs)

    monkeypatch.setattr("stages.train.embed_crops", spy)
    scored = verifier(tmp_path, "cpu", flip=flip)(model)
    assert asked == [flip]
    pairs = load_bin(tmp_path / "lfw.bin")
    expected = {}
    for with_flip in (True, False):
        emb = embed_crops(model, pairs.images, batch_size=64, flip=with_flip, device="cpu")
        expected[with_flip] = evaluate_pairs(emb, np.asarray(pairs.issame)).accuracy
    assert set(scored) == {"lfw"} and scored["lfw"] == expected[flip]
