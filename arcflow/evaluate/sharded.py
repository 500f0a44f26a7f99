"""Embedding one set across torchrun ranks: each embeds a contiguous share, all gather.

Shares are whole batches, so every batch holds the same images as in a single process.
Gathering uses the process group the evaluate stage joined (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from arcflow.evaluate.embed import CropReader, Encoder, Features, embed_images
from arcflow.train.distributed import DistContext


def share(count: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)``: rank's contiguous run of whole batches (the last rank may get fewer)."""
    batches = -(-count // batch_size)
    per_rank = -(-batches // world_size)
    lo = min(count, rank * per_rank * batch_size)
    return lo, min(count, lo + per_rank * batch_size)


def _gather(part: np.ndarray | None, dim: int, counts: list[int], ctx: DistContext) -> np.ndarray:
    """Every rank's rows, in rank order (parts padded to one length for all_gather)."""
    longest = max(counts)
    padded = torch.zeros(longest, dim, dtype=torch.float32, device=ctx.device)
    if part is not None and len(part):
        padded[: len(part)] = torch.from_numpy(part).to(ctx.device)
    pieces = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(pieces, padded)
    return np.concatenate([p[:n].cpu().numpy() for p, n in zip(pieces, counts, strict=True)])


def embed_sharded(
    encoder: Encoder,
    read: CropReader,
    count: int,
    ctx: DistContext,
    *,
    batch_size: int,
    flip: bool,
    desc: str,
) -> Features:
    """:func:`embed_images` of ``count`` crops, split over the ranks of ``ctx``."""
    lo, hi = share(count, batch_size, ctx.rank, ctx.world_size)
    mine = None
    if hi > lo:
        mine = embed_images(
            encoder, lambda a, b: read(lo + a, lo + b), hi - lo,
            batch_size=batch_size, flip=flip, desc=f"{desc} [rank {ctx.rank}]",
        )  # fmt: skip
    shapes: list[tuple[int, int]] = [(0, 0)] * ctx.world_size
    dist.all_gather_object(shapes, (0, 0) if mine is None else mine.plain.shape)
    counts, dim = [n for n, _ in shapes], max(d for _, d in shapes)
    plain = _gather(None if mine is None else mine.plain, dim, counts, ctx)
    flipped = None
    if flip:
        flipped = _gather(None if mine is None else mine.flipped, dim, counts, ctx)
    return Features(plain, flipped)
