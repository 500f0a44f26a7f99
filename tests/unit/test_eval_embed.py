"""Embedding: flip test, feature combination, the per-(model, dataset) cache, the context."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import arcflow.evaluate.embed as embed_module
from arcflow.data.binpairs import save_bin
from arcflow.data.imageset import write_image_set
from arcflow.data.transforms import encode_jpeg
from arcflow.errors import DataFormatError
from arcflow.evaluate.cache import FeatureCache
from arcflow.evaluate.context import EvalContext, rows_of
from arcflow.evaluate.embed import Features, embed_images, l2_normalize, to_batch

pytestmark = pytest.mark.unit


class ColumnEncoder:
    """Features = mean of the red channel over the left and the right half (exact, readable)."""

    key = "columns"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        red = batch[:, 0]
        return np.stack([red[:, :, :56].mean((1, 2)), red[:, :, 56:].mean((1, 2))], axis=1)


def _crop(left: int, right: int) -> bytes:
    rgb = np.zeros((112, 112, 3), np.uint8)
    rgb[:, :56, 0], rgb[:, 56:, 0] = left, right
    return encode_jpeg(rgb, quality=100)


def test_to_batch_normalises_like_insightface() -> None:
    batch = to_batch([_crop(0, 255)], "t")
    assert batch.shape == (1, 3, 112, 112) and batch.dtype == np.float32
    assert batch[0, 0, 0, 0] == pytest.approx(-1.0, abs=0.02)
    assert batch[0, 0, 0, 111] == pytest.approx(1.0, abs=0.02)


def test_flip_feature_is_the_mirrored_crop() -> None:
    crops = [_crop(0, 255), _crop(255, 0), _crop(128, 128)]
    features = embed_images(ColumnEncoder(), lambda a, b: crops[a:b], 3, batch_size=2)
    assert features.flipped is not None
    np.testing.assert_allclose(features.flipped, features.plain[:, ::-1], atol=0.02)
    assert features.plain[0, 0] < 0 < features.plain[0, 1]


def test_combined_sums_then_normalises() -> None:
    f = Features(np.array([[3.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(f.combined(), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(f.combined(normalize=False), [[3.0, 4.0], [0.0, 0.0]])
    assert Features(f.plain).combined()[0].tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(f.take(np.array([1])).plain, [[0.0, 0.0]])
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(np.ones((2, 5))), axis=1), 1.0)


def test_no_images_is_an_error() -> None:
    with pytest.raises(DataFormatError, match="no images"):
        embed_images(ColumnEncoder(), lambda a, b: [], 0)


def test_cache_embeds_once_and_recovers_from_a_corrupt_entry(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    calls = []

    def compute() -> Features:
        calls.append(1)
        return Features(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32))

    first, hit1 = cache.get_or_compute("m", "d", True, compute)
    second, hit2 = cache.get_or_compute("m", "d", True, compute)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(second.plain, first.plain)
    np.testing.assert_array_equal(second.flipped, first.flipped)
    _, hit3 = cache.get_or_compute("m", "d", False, compute)  # flip is part of the key
    assert not hit3 and len(calls) == 2
    path = cache.path("m", "d", True)
    assert path is not None
    path.write_bytes(b"garbage")
    _, hit4 = cache.get_or_compute("m", "d", True, compute)
    assert not hit4 and len(calls) == 3
    assert FeatureCache(None).path("m", "d", True) is None


def test_context_reads_pair_and_image_sets_and_caches(tmp_path: Path) -> None:
    crops = [_crop(10 * i, 250 - 10 * i) for i in range(6)]
    save_bin(tmp_path / "lfw.bin", crops, [True, False, True])
    (tmp_path / "sets").mkdir()
    write_image_set(tmp_path / "sets" / "ytf", [(f"v/{i}.jpg", c) for i, c in enumerate(crops)])
    encoder = ColumnEncoder()
    ctx = EvalContext(tmp_path, encoder, batch_size=4, cache=FeatureCache(tmp_path / "cache"))
    pairs, features = ctx.pair_set("lfw")
    assert len(pairs) == 3 and features.plain.shape == (6, 2)
    names, set_features = ctx.image_set("ytf")
    assert names == [f"v/{i}.jpg" for i in range(6)]
    np.testing.assert_array_equal(set_features.plain, features.plain)
    assert (ctx.embedded, ctx.cached) == (12, 0)
    calls = encoder.calls
    ctx.pair_set("lfw")
    assert (ctx.cached, encoder.calls) == (6, calls)  # re-scoring does not re-embed


class CountingEncoder(ColumnEncoder):
    """ColumnEncoder that also counts the images it embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.images += len(batch)
        return super().__call__(batch)


def test_a_pair_set_embeds_each_distinct_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image in several pairs (as in LFW's .bin) is embedded once; every slot gets its
    features, equal to embedding every slot."""
    a, b, c = _crop(0, 255), _crop(255, 0), _crop(40, 200)
    slots = [a, b, a, c, b, c, a, a]
    save_bin(tmp_path / "lfw.bin", slots, [False, False, False, True])
    encoder = CountingEncoder()
    pairs, features = EvalContext(tmp_path, encoder, batch_size=2).pair_set("lfw")
    assert len(pairs) == 4 and encoder.images == 3 * 2  # 3 distinct images, flip test
    every_slot = embed_images(ColumnEncoder(), lambda i, j: slots[i:j], len(slots), batch_size=2)
    np.testing.assert_array_equal(features.plain, every_slot.plain)
    np.testing.assert_array_equal(features.flipped, every_slot.flipped)
    # the training-time verification's path (embed_crops) does the same
    counting = CountingEncoder()
    monkeypatch.setattr(embed_module, "TorchEncoder", lambda model, device: counting)
    direct = embed_module.embed_crops(None, slots, batch_size=2)  # type: ignore[arg-type]
    assert counting.images == 3 * 2
    np.testing.assert_array_equal(direct, every_slot.combined())


def test_rows_of_names_the_missing_image() -> None:
    np.testing.assert_array_equal(rows_of(["a", "b", "c"], ["c", "a"], "x"), [2, 0])
    with pytest.raises(DataFormatError, match="'d'"):
        rows_of(["a"], ["a", "d"], "x")


@pytest.mark.parametrize(
    ("count", "batch", "world"), [(10, 4, 2), (10, 4, 3), (3, 4, 2), (64, 8, 4)]
)
def test_rank_shares_are_whole_batches_covering_everything(
    count: int, batch: int, world: int
) -> None:
    from arcflow.evaluate.sharded import share

    shares = [share(count, batch, rank, world) for rank in range(world)]
    assert shares[0][0] == 0 and shares[-1][1] == count
    for (lo, hi), (next_lo, _) in itertools.pairwise(shares):
        assert hi == next_lo and lo % batch == 0 and lo <= hi
    assert share(10, 4, 0, 2) == (0, 8) and share(10, 4, 1, 2) == (8, 10)


def _output_layer_inputs(model) -> dict[str, object]:
    """The dtypes entering every Linear and BatchNorm1d (the FC + BN1d output layer)."""
    import torch

    seen: dict[str, object] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.BatchNorm1d):
            module.register_forward_pre_hook(
                lambda _m, args, name=name: seen.__setitem__(name, args[0].dtype)
            )
    return seen


@pytest.mark.parametrize("backbone", ["iresnet18", "mobilefacenet"])
def test_a_bf16_trunk_keeps_the_output_layer_in_fp32(backbone: str) -> None:
    """As insightface: the trunk under autocast, FC + BN1d in fp32 (the embedding is not
    rounded to bf16 before the head sees it)."""
    import torch

    from arcflow.models import get_backbone, set_trunk_precision

    model = get_backbone(backbone, embedding_size=32).eval()
    assert set_trunk_precision(model, torch.bfloat16) == "bf16-trunk"
    seen = _output_layer_inputs(model)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.dtype == torch.float32 and seen and set(seen.values()) == {torch.float32}
    assert set_trunk_precision(model, None) == "fp32" and not model.fp16


def test_the_encoder_key_names_device_and_precision() -> None:
    from arcflow.evaluate.embed import TorchEncoder
    from arcflow.models import get_backbone

    encoder = TorchEncoder(get_backbone("iresnet18", embedding_size=32), key="torch-abc")
    assert encoder.key == "torch-abc-cpu-fp32"  # CUDA: torch-abc-cuda-bf16-trunk
