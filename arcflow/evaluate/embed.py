"""Batched embedding of aligned crops, with insightface's flip test."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from arcflow.data.transforms import decode_rgb, to_tensor
from arcflow.progress import progress


@torch.inference_mode()
def embed_crops(
    model: nn.Module,
    images: Sequence[bytes],
    *,
    batch_size: int = 128,
    flip: bool = True,
    device: torch.device | str = "cpu",
    desc: str = "embed",
) -> np.ndarray:
    """Embed encoded 112x112 crops: f(x) (+ f(flip(x))), L2-normalised, as float32 (N, D)."""
    model = model.eval().to(device, memory_format=torch.channels_last)
    chunks: list[np.ndarray] = []
    starts = range(0, len(images), batch_size)
    for start in progress(starts, desc=desc, unit="batch"):
        batch = torch.stack(
            [
                to_tensor(decode_rgb(buf, where=f"{desc} image {start + i}"))
                for i, buf in enumerate(images[start : start + batch_size])
            ]
        ).to(device, memory_format=torch.channels_last)
        emb = model(batch).float()
        if flip:
            emb = emb + model(torch.flip(batch, dims=[3])).float()
        chunks.append(nn.functional.normalize(emb, dim=1).cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)
