"""Batched embedding of aligned crops with insightface's flip test, from PyTorch or ONNX.

An :class:`Encoder` maps a normalised float32 batch ``(B, 3, 112, 112)`` (``(x/255 - 0.5)/0.5``,
RGB) to raw features ``(B, D)``. :func:`embed_images` runs it over encoded crops and returns
:class:`Features`: ``plain`` = f(x) and ``flipped`` = f(flip(x)), both raw, so each benchmark
combines them its own way (pair sets: L2-normalised sum; IJB: the unnormalised sum).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from arcflow.data.transforms import decode_rgb
from arcflow.devices import channels_last_is_safe
from arcflow.embedding import OnnxEncoder, file_digest, l2_normalize, normalise_crops
from arcflow.errors import ConfigError, DataFormatError
from arcflow.models import set_trunk_precision
from arcflow.progress import progress

#: A chunk of encoded crops, read lazily: ``read(start, stop)`` -> JPEG bytes of that range.
CropReader = Callable[[int, int], Sequence[bytes]]


class Encoder(Protocol):
    """Anything that embeds a normalised float32 NCHW batch; ``key`` names its weights."""

    key: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchEncoder:
    """A PyTorch backbone on ``device``: channels_last where safe; on CUDA the trunk runs in
    bf16 and the output layer (FC + BN1d) in fp32, as insightface's ``fp16`` backbones do.

    ``key`` names the weights, the device and the precision: features from one are never
    served from the cache for another.
    """

    def __init__(
        self, model: nn.Module, *, device: torch.device | str = "cpu", key: str = ""
    ) -> None:
        self.device = torch.device(device)
        nhwc = channels_last_is_safe(model, self.device)
        self.memory_format = torch.channels_last if nhwc else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        amp = torch.bfloat16 if self.device.type == "cuda" else None
        self.precision = set_trunk_precision(self.model, amp)
        self.key = f"{key or f'torch-{id(model)}'}-{self.device.type}-{self.precision}"

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        return self.model(x).float().cpu().numpy()


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> Encoder:
    """An encoder for ``backbone.pt`` (PyTorch), ``*.onnx`` (ONNX Runtime), a model folder of
    ``arcflow import-model`` or an MLflow model URI of an exported ONNX model
    (``models:/arcface@champion``)."""
    from arcflow.models.saving import load_backbone

    if str(path).startswith("models:/"):
        from arcflow.export.mlflow_model import download_onnx

        path = download_onnx(str(path))
    path = Path(path)
    if path.is_dir():
        from arcflow.imports.folder import imported_model

        path = imported_model(path)[1]
    if path.suffix == ".onnx":
        return OnnxEncoder(path, device=torch.device(device).type)
    if path.suffix not in (".pt", ".pth"):
        raise ConfigError(
            f"{path}: not a model this can load",
            hint="give a backbone.pt, an .onnx export, a folder from `arcflow import-model` or "
            "an MLflow URI such as models:/arcface@champion",
        )
    return TorchEncoder(load_backbone(path), device=device, key="torch-" + file_digest(path))


@dataclass(frozen=True, eq=False)
class Features:
    """Raw features of N crops: ``plain`` f(x) and ``flipped`` f(flip(x)) (None without flip)."""

    plain: np.ndarray
    flipped: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.plain)

    def combined(self, *, normalize: bool = True) -> np.ndarray:
        """f(x) + f(flip(x)) (or f(x)), L2-normalised unless ``normalize`` is False."""
        emb = self.plain if self.flipped is None else self.plain + self.flipped
        return l2_normalize(emb) if normalize else emb.astype(np.float32, copy=False)

    def take(self, rows: np.ndarray) -> Features:
        """The features of ``rows`` (an index array)."""
        return Features(self.plain[rows], None if self.flipped is None else self.flipped[rows])


def distinct_images(images: Sequence[bytes]) -> tuple[list[bytes], np.ndarray]:
    """The distinct encoded crops, in first-seen order, and each input's row among them.

    A pair set stores an image once per pair it is in (LFW: 12,000 slots, 7,701 images):
    embedding each distinct one once gives the same features for a fraction of the work.
    """
    first: dict[bytes, int] = {}
    rows = np.fromiter(
        (first.setdefault(bytes(image), len(first)) for image in images),
        dtype=np.int64,
        count=len(images),
    )
    return list(first), rows


def to_batch(images: Sequence[bytes], where: str, start: int = 0) -> np.ndarray:
    """Decode crops into one normalised float32 NCHW batch."""
    rgb = np.stack(
        [decode_rgb(buf, where=f"{where} image {start + i}") for i, buf in enumerate(images)]
    )
    return normalise_crops(rgb)


def embed_images(
    encoder: Encoder,
    read: CropReader,
    count: int,
    *,
    batch_size: int = 128,
    flip: bool = True,
    desc: str = "embed",
) -> Features:
    """Embed ``count`` crops read batch by batch through ``read(start, stop)``."""
    plain: list[np.ndarray] = []
    flipped: list[np.ndarray] = []
    for start in progress(range(0, count, batch_size), desc=desc, unit="batch"):
        batch = to_batch(read(start, min(count, start + batch_size)), desc, start)
        plain.append(encoder(batch))
        if flip:
            flipped.append(encoder(np.ascontiguousarray(batch[..., ::-1])))
    if not plain:
        raise DataFormatError(f"{desc}: no images to embed")
    return Features(np.concatenate(plain), np.concatenate(flipped) if flip else None)


def embed_crops(
    model: nn.Module,
    images: Sequence[bytes],
    *,
    batch_size: int = 128,
    flip: bool = True,
    device: torch.device | str = "cpu",
    desc: str = "embed",
) -> np.ndarray:
    """Embed in-memory crops with a PyTorch model: L2-normalised f(x) (+ f(flip(x))), (N, D).
    Each distinct crop is embedded once."""
    encoder = TorchEncoder(model, device=device)
    distinct, rows = distinct_images(images)
    features = embed_images(
        encoder,
        lambda a, b: distinct[a:b],
        len(distinct),
        batch_size=batch_size,
        flip=flip,
        desc=desc,
    )
    return features.take(rows).combined()
