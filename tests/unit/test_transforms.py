"""Decoding, normalisation and augmentation of face crops, and the training Dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from arcflow.data.face_records import write_face_dataset
from arcflow.data.faces import AlignedFaceDataset
from arcflow.data.transforms import decode_rgb, encode_jpeg, to_tensor, train_augmentation
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit


def _reference(rgb: np.ndarray) -> np.ndarray:
    """insightface's normalisation in float64, HWC -> CHW."""
    return ((rgb.astype(np.float64) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def test_to_tensor_values_layout_and_dtype() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (0, 255, 127)
    rgb[0, 1] = (128, 1, 254)
    rgb[1] = np.arange(9, dtype=np.uint8).reshape(3, 3) * 20
    out = to_tensor(rgb)
    assert out.dtype == torch.float32
    assert out.shape == (3, 2, 3)  # CHW
    assert out[:, 0, 0].tolist() == [-1.0, 1.0, pytest.approx(-0.5 / 127.5, abs=1e-7)]
    assert out[0, 0, 1].item() == pytest.approx(0.5 / 127.5, abs=1e-7)  # 127.5 would map to 0
    assert out[0, 0, 1].item() == pytest.approx(-out[2, 0, 0].item(), abs=1e-7)  # 128 vs 127
    np.testing.assert_allclose(out.numpy(), _reference(rgb), rtol=0, atol=1e-6)


def test_to_tensor_every_uint8_value() -> None:
    rgb = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    rgb[..., 1] = 255 - rgb[..., 0]
    out = to_tensor(rgb)
    np.testing.assert_allclose(out.numpy(), _reference(rgb), rtol=0, atol=1e-6)
    assert out.min().item() == -1.0 and out.max().item() == 1.0


def test_to_tensor_accepts_non_contiguous_views() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    flipped = rgb[:, ::-1]
    assert torch.equal(to_tensor(flipped), to_tensor(np.ascontiguousarray(flipped)))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_decode_rgb_returns_rgb_channel_order(ext: str) -> None:
    bgr = np.zeros((16, 16, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    ok, buf = cv2.imencode(ext, bgr)
    assert ok
    rgb = decode_rgb(buf.tobytes())
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[..., 0], 255, atol=2)
    np.testing.assert_allclose(rgb[..., 1:], 0, atol=2)
    np.testing.assert_array_equal(decode_rgb(buf), rgb)  # numpy buffers work too


def test_encode_jpeg_round_trips_rgb() -> None:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 2] = 255  # pure blue in RGB
    out = decode_rgb(encode_jpeg(rgb))
    np.testing.assert_allclose(out[..., 2], 255, atol=2)
    np.testing.assert_allclose(out[..., :2], 0, atol=2)


@pytest.mark.parametrize("buf", [b"not an image", b"\xff\xd8\xff\xe0", b""])
def test_decode_rgb_names_where_for_undecodable_bytes(buf: bytes) -> None:
    with pytest.raises(DataFormatError, match=r"data/train\.rec image 7"):
        decode_rgb(buf, where="data/train.rec image 7")


def test_train_augmentation_flip_probability_extremes() -> None:
    rng = np.random.default_rng(1)
    always, never = train_augmentation(hflip=1.0), train_augmentation(hflip=0.0)
    for _ in range(20):
        rgb = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
        np.testing.assert_array_equal(always(image=rgb)["image"], rgb[:, ::-1])
        np.testing.assert_array_equal(never(image=rgb)["image"], rgb)


def _tiny_dataset(tmp_path: Path) -> tuple[Path, list[int], list[bytes]]:
    rng = np.random.default_rng(2)
    labels = [0, 0, 1, 2, 2, 2]
    jpegs = [encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in labels]
    assert write_face_dataset(tmp_path, zip(labels, jpegs, strict=True)) == (6, 3)
    return tmp_path, labels, jpegs


def test_aligned_face_dataset_items_match_direct_decode(tmp_path: Path) -> None:
    rec_dir, labels, jpegs = _tiny_dataset(tmp_path)
    dataset = AlignedFaceDataset(rec_dir)
    assert len(dataset) == 6 and dataset.num_classes == 3
    for i, (label, jpeg) in enumerate(zip(labels, jpegs, strict=True)):
        tensor, got = dataset[i]
        assert got == label and isinstance(got, int)
        assert tensor.shape == (3, 112, 112) and tensor.dtype == torch.float32
        assert torch.equal(tensor, to_tensor(decode_rgb(jpeg)))


def test_aligned_face_dataset_applies_the_augmentation(tmp_path: Path) -> None:
    rec_dir, labels, jpegs = _tiny_dataset(tmp_path)
    dataset = AlignedFaceDataset(rec_dir, augment=train_augmentation(hflip=1.0))
    for i, jpeg in enumerate(jpegs):
        tensor, label = dataset[i]
        assert label == labels[i]
        assert torch.equal(tensor, to_tensor(decode_rgb(jpeg)).flip(2))


def test_to_tensor_is_torchs_float32_arithmetic_bit_for_bit() -> None:
    """The numpy normalisation gives exactly the tensors the earlier torch ops gave."""
    rgb = np.random.default_rng(5).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    rgb.reshape(-1)[:256] = np.arange(256)  # every value at least once
    chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    assert torch.equal(to_tensor(rgb), chw.float().div_(127.5).sub_(1.0))


def test_preloaded_items_equal_decoded_ones_with_every_augmentation(tmp_path: Path) -> None:
    rec_dir, labels, _ = _tiny_dataset(tmp_path)
    augment = {"hflip": 0.5, "downscale": 0.5, "blur": 0.5, "color": 0.5, "grayscale": 0.5}
    decoded = AlignedFaceDataset(rec_dir, augment=train_augmentation(**augment))
    cached = AlignedFaceDataset(rec_dir, augment=train_augmentation(**augment))
    assert cached.preload(6 * 112 * 112 * 3) and cached.decoded is not None
    before = cached.decoded.copy()
    for seed in range(4):  # the same seeded augmentation on the same pixels, twice over
        for i in range(6):
            decoded.augment.set_random_seed(seed * 10 + i)
            cached.augment.set_random_seed(seed * 10 + i)
            (a, la), (b, lb) = decoded[i], cached[i]
            assert la == lb == labels[i] and torch.equal(a, b)
    np.testing.assert_array_equal(cached.decoded, before)  # augmenting never edits the cache


def test_preload_respects_its_budget(tmp_path: Path) -> None:
    rec_dir, _, _ = _tiny_dataset(tmp_path)
    dataset = AlignedFaceDataset(rec_dir)
    assert not dataset.preload(6 * 112 * 112 * 3 - 1) and dataset.decoded is None
    assert not dataset.preload(0) and dataset.decoded is None


def test_optional_augmentations_change_the_crop_and_keep_its_shape() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    names = {"downscale": "Downscale", "blur": "GaussianBlur", "color": "HueSaturationValue",
             "grayscale": "ToGray"}  # fmt: skip
    for option, transform in names.items():
        compose = train_augmentation(hflip=0.0, **{option: 1.0})
        assert [type(t).__name__ for t in compose.transforms] == ["HorizontalFlip", transform]
        out = compose(image=rgb)["image"]
        assert out.shape == rgb.shape and out.dtype == np.uint8 and not np.array_equal(out, rgb)
    grey = train_augmentation(hflip=0.0, grayscale=1.0)(image=rgb)["image"]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert [type(t).__name__ for t in train_augmentation().transforms] == ["HorizontalFlip"]
