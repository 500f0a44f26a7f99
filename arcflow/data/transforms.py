"""Decoding and tensor conversion of aligned 112x112 face crops (insightface normalisation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from arcflow.errors import DataFormatError
from arcflow.imageio import DEFAULT_MAX_BYTES, check_budget, image_header, imdecode

if TYPE_CHECKING:  # imported by training only: 0.4 s that evaluate, export and serve skip
    import albumentations as A

#: Crops are 112x112; anything above 4096x4096 in a training or evaluation set is refused.
MAX_CROP_PIXELS = 4096 * 4096


def decode_rgb(
    buf: bytes | np.ndarray, *, where: str = "image", max_pixels: int = MAX_CROP_PIXELS
) -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 array; names ``where`` on failure.

    The header's size is checked against ``max_pixels`` (and the decode's byte budget) before
    any pixel is decoded: a tiny PNG declaring 30000x30000 is refused, not decoded.
    """
    arr = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes | bytearray) else buf
    # cv2.imdecode raises (not returns None) on an empty buffer, e.g. a header-only record
    if not arr.size:
        raise DataFormatError(f"{where}: not a decodable image (0 bytes)")
    data = arr.tobytes()
    width, height, _ = image_header(data, where, complete=False)
    check_budget(width, height, where, max_pixels=max_pixels, max_bytes=DEFAULT_MAX_BYTES)
    bgr = imdecode(data, cv2.IMREAD_COLOR, where)
    if bgr is None:
        raise DataFormatError(f"{where}: not a decodable image ({len(arr)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes (insightface packs crops at quality 95)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float tensor in [-1, 1]: ((x / 255) - 0.5) / 0.5."""
    # numpy, not torch ops: the same float32 arithmetic, without waking torch's thread pool
    # for a 150 KB tensor (in the training process that costs more than the decode)
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    chw /= np.float32(127.5)
    chw -= np.float32(1.0)
    return torch.from_numpy(chw)


def train_augmentation(
    hflip: float = 0.5,
    downscale: float = 0.0,
    blur: float = 0.0,
    color: float = 0.0,
    grayscale: float = 0.0,
) -> A.Compose:
    """Training augmentation; each argument is the probability of one transform.

    Horizontal flip is insightface's default. The others follow the kinds of its optional DALI
    augmentations (downscale 0.1, blur 0.2, HSV 0.2, grey 0.1 there): downscale to 25-75% and
    back up (low-resolution faces), Gaussian blur (sigma 0.5-2), hue/saturation/value shifts,
    grey (three equal channels). Transforms with probability 0 are left out.
    """
    import albumentations as A

    optional = [
        (downscale, lambda p: A.Downscale(scale_range=(0.25, 0.75), p=p)),
        (blur, lambda p: A.GaussianBlur(sigma_limit=(0.5, 2.0), p=p)),
        (color, lambda p: A.HueSaturationValue(p=p)),
        (grayscale, lambda p: A.ToGray(p=p)),
    ]
    steps = [A.HorizontalFlip(p=hflip)] + [make(p) for p, make in optional if p > 0]
    return A.Compose(steps)
