"""Partial FC: a model-parallel, class-sampled margin softmax for very large class counts.

Facts taken from insightface's ``PartialFC_V2`` (see ``shared/reference/insightface.md``); the
code is ours. The ``(num_classes, embedding_size)`` centre matrix is sharded over the ranks of a
``torch.distributed`` process group: rank ``r`` of ``W`` owns the contiguous classes
``[class_start, class_start + num_local)`` with ``num_local = C // W + (r < C % W)`` and
``class_start = C // W · r + min(r, C % W)``. Each step:

1. the local batches of embeddings and labels are all-gathered (embeddings with gradient);
2. labels outside the local shard are negatives here; of the ``num_local`` centres this rank
   samples ``max(1, int(sample_rate · num_local))``, always keeping every class that is positive
   somewhere in the global batch (all of them when there are more positives than that);
3. ``cos θ = linear(normalize(x), normalize(W_sampled)).clamp(-1, 1)``; the owner of each
   sample's class replaces its target cosine with the combined margin
   :func:`~arcflow.heads.margins.margin_target` ``cos(m1·θ + m2) − m3``; logits ``s·cos``;
4. a distributed softmax cross-entropy (global row max by ``all_reduce(MAX)``, global sum of
   exponentials and the target logit by ``all_reduce(SUM)``) gives every rank the same loss:
   the mean over the GLOBAL batch of ``−log p_target``.

At ``sample_rate = 1`` the loss and all gradients equal a single-process
:class:`~arcflow.heads.margins.MarginHead` over the global batch with the same full matrix
(``tests/integration/test_partial_fc.py`` checks this with two real gloo processes).

Gradient-scaling convention (same as insightface): the backward of the embedding all-gather sums
the gradient of the gathered embeddings over all ranks, keeps this rank's rows and multiplies them
by the world size ``W``. So ``embeddings.grad`` on a rank is ``W ×`` the gradient of the global
mean loss with respect to those rows, and after DDP AVERAGES the backbone gradients over the
ranks (its default) the backbone gradient equals the single-process gradient of the global mean
loss. (This also holds for uneven local batch sizes, which the all-gather supports.) Wrap only the
backbone in DDP, never this head: its shards differ by design.

Optimiser semantics: *unsampled centres get no weight-decay or momentum update.* The shard is a
buffer (``weight``), not a parameter, so ``PartialFC.parameters()`` is empty and the trainer's
main optimiser never sees the centres. Each training forward copies the sampled rows into a fresh
leaf tensor that requires grad; :meth:`PartialFC.step` applies SGD (momentum, weight decay,
optional Nesterov, same arithmetic as ``torch.optim.SGD`` without dampening) to exactly the rows
sampled since the previous step, using a per-row momentum buffer that covers the whole shard. Rows
that were not sampled keep their weights and their momentum bit for bit. A trainer::

    head = PartialFC(512, num_classes, s=64, m2=0.5, sample_rate=0.2, seed=cfg.seed).to(device)
    opt = torch.optim.SGD(backbone.parameters(), lr, momentum=0.9, weight_decay=5e-4)
    for x, y in loader:                       # drop_last=True keeps the ranks in step
        loss = head(backbone(x), y)           # backbone wrapped in DDP, head not
        loss.backward()
        opt.step()
        head.step(opt.param_groups[0]["lr"], momentum=0.9, weight_decay=5e-4)
        opt.zero_grad(set_to_none=True)       # head.step already consumed the head's grads

With gradient accumulation, call ``head.step`` once per optimiser step; the gradients of all the
forwards since the previous step are summed (per sampled row). With AMP pass
``grad_scale=scaler.get_scale()`` (read before ``scaler.update()``): the head unscales and skips a
non-finite update, like ``GradScaler`` does for the backbone optimiser.

The sampling is random but reproducible: step ``k`` on rank ``r`` draws from a generator seeded
from ``(seed, r, k)``. ``state_dict()`` holds ``weight``, ``momentum_buffer`` and an extra state
with the step counter, seed and shard geometry, so resuming from a checkpoint continues with the
identical sampling; loading a shard saved for a different class range raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx

from arcflow.heads.margins import check_head_args, margin_target
from arcflow.seeding import derive_seed

#: Standard deviation of the ``N(0, INIT_STD)`` centre initialisation.
INIT_STD = 0.01
# The canonical centre matrix is generated in row chunks, each from its own seeded generator, so
# a rank builds only the chunks that overlap its shard instead of the whole (C, D) matrix.
_INIT_CHUNK_ROWS = 8192
_STATE_VERSION = 1


def init_centres(
    num_classes: int,
    embedding_size: int,
    seed: int,
    start: int = 0,
    stop: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rows ``[start, stop)`` of the canonical ``N(0, 0.01)`` centre matrix for ``seed``.

    The values depend only on ``(num_classes, embedding_size, seed)`` and the row, never on how
    the matrix is sharded: ``init_centres(C, D, seed)`` is exactly the concatenation of every
    rank's :class:`PartialFC` shard. Values are drawn in fp32 and then cast to ``dtype``.
    """
    stop = num_classes if stop is None else stop
    if not 0 <= start <= stop <= num_classes:
        raise ValueError(f"bad row range [{start}, {stop}) for {num_classes} classes")
    out = torch.empty(stop - start, embedding_size, dtype=dtype)
    if stop == start:
        return out
    for chunk in range(start // _INIT_CHUNK_ROWS, (stop - 1) // _INIT_CHUNK_ROWS + 1):
        c0 = chunk * _INIT_CHUNK_ROWS
        c1 = min(c0 + _INIT_CHUNK_ROWS, num_classes)
        gen = torch.Generator().manual_seed(derive_seed("partial_fc.init", seed, chunk))
        block = torch.empty(c1 - c0, embedding_size).normal_(0.0, INIT_STD, generator=gen)
        lo, hi = max(start, c0), min(stop, c1)
        out[lo - start : hi - start] = block[lo - c0 : hi - c0].to(dtype)
    return out


def shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(class_start, num_local)`` of ``rank``'s shard of ``num_classes`` over ``world_size``."""
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + (1 if rank < extra else 0)


def _gather_sizes(n: int, device: torch.device, group: Any, world: int) -> list[int]:
    local = torch.tensor([n], dtype=torch.int64, device=device)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local, group=group)
    return [int(p.item()) for p in parts]


def _gather_rows(tensor: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    """All-gather tensors whose first dimension may differ between ranks (padded to the max)."""
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)], dim=0)


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward: sum over ranks, keep own rows, multiply by world size."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, tensor: torch.Tensor, sizes: list[int], rank: int, group: Any
    ) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group  # type: ignore[attr-defined]
        return _gather_rows(tensor, sizes, group)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        sizes: list[int] = ctx.sizes  # type: ignore[attr-defined]
        rank: int = ctx.rank  # type: ignore[attr-defined]
        grad = grad.contiguous().clone()  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)  # type: ignore[attr-defined]
        offset = sum(sizes[:rank])
        own = grad[offset : offset + sizes[rank]] * len(sizes)
        return own, None, None, None


class _DistSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean over the global batch of ``−log softmax(logits)[target]``, classes split over ranks.

    ``logits`` is this rank's ``(B_global, S)`` block; ``local_labels`` holds the column of each
    row's target in this block, or −1 where another rank owns the target. Every rank returns the
    same loss. The backward ``(softmax − onehot) / B_global`` is local: it is the exact partial
    derivative of the global loss with respect to this rank's block.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        logits: torch.Tensor,
        local_labels: torch.Tensor,
        group: Any,
        distributed: bool,
    ) -> torch.Tensor:
        n = logits.shape[0]
        row_max = logits.max(dim=1).values
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        prob = torch.exp(logits - row_max[:, None])
        denom = prob.sum(dim=1)
        rows = (local_labels >= 0).nonzero().squeeze(1)
        cols = local_labels[rows]
        target = torch.zeros_like(row_max)
        target[rows] = logits[rows, cols]
        if distributed:
            dist.all_reduce(denom, op=dist.ReduceOp.SUM, group=group)
            dist.all_reduce(target, op=dist.ReduceOp.SUM, group=group)
        loss = (torch.log(denom) + row_max - target).mean()
        prob.div_(denom[:, None])
        ctx.save_for_backward(prob, rows, cols)
        ctx.batch = n  # type: ignore[attr-defined]
        return loss

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        prob, rows, cols = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grad_out / ctx.batch  # type: ignore[attr-defined]
        # Not in place on ``prob``, so a retained graph can be differentiated again.
        grad = prob * scale
        grad[rows, cols] -= scale
        return grad, None, None, None


class PartialFC(nn.Module):
    """Sharded, class-sampled combined-margin softmax loss; ``forward`` returns the loss scalar.

    Args:
        embedding_size, num_classes: the centre matrix is ``(num_classes, embedding_size)``,
            this rank holding ``num_local`` rows of it from ``class_start`` (see
            :func:`shard_range`).
        s, m1, m2, m3: scale and combined margin, as in
            :class:`~arcflow.heads.margins.MarginHead`.
        sample_rate: in ``(0, 1]``; each training step uses
            ``max(1, int(sample_rate · num_local))`` local centres plus any extra positives.
            Eval mode (``.eval()``) always uses every centre and does not advance the sampling.
        straight_through: add the margin to the target logit without gradient (logits as
            ``MarginHead(straight_through=True)``).
        process_group: the ``torch.distributed`` group to shard over; default the world group
            when ``torch.distributed`` is initialised, else a single process.
        seed: seeds the centre initialisation (:func:`init_centres`) and the sampling.
        eps: forwarded to :func:`~arcflow.heads.margins.margin_target`.

    ``forward(embeddings (local_batch, D), labels (local_batch,))`` must be called by every rank
    of the group in the same order (collectives inside); local batch sizes may differ. The head
    computes in the dtype of its buffers (fp32 by default) with autocast disabled.
    """

    weight: torch.Tensor
    momentum_buffer: torch.Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.0,
        m3: float = 0.0,
        sample_rate: float = 1.0,
        straight_through: bool = False,
        process_group: Any = None,
        seed: int = 0,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        check_head_args(embedding_size, num_classes, s, m1)
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if dist.is_available() and dist.is_initialized():
            self.rank = dist.get_rank(process_group)
            self.world_size = dist.get_world_size(process_group)
        else:
            if process_group is not None:
                raise ValueError("process_group given but torch.distributed is not initialised")
            self.rank, self.world_size = 0, 1
        if num_classes < self.world_size:
            raise ValueError(
                f"num_classes ({num_classes}) must be at least the world size ({self.world_size})"
            )
        self.process_group = process_group
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.class_start, self.num_local = shard_range(num_classes, self.world_size, self.rank)
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.sample_rate = float(sample_rate)
        self.num_sample = max(1, int(self.sample_rate * self.num_local))
        self.straight_through = straight_through
        self.seed = int(seed)
        self.eps = eps
        self.sample_step = 0
        stop = self.class_start + self.num_local
        self.register_buffer(
            "weight", init_centres(num_classes, embedding_size, seed, self.class_start, stop)
        )
        self.register_buffer("momentum_buffer", torch.zeros(self.num_local, embedding_size))
        # (local row index or None for all rows, leaf holding those rows) since the last step()
        self._pending: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        #: Local row indices used by the latest forward (``None``: every row).
        self.last_index: torch.Tensor | None = None

    @property
    def has_margin(self) -> bool:
        return not (self.m1 == 1.0 and self.m2 == 0.0 and self.m3 == 0.0)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ---------------------------------------------------------------- forward
    def _sample(self, all_labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(sampled local rows or None for all, label column per row or −1)``."""
        in_shard = (all_labels >= self.class_start) & (
            all_labels < self.class_start + self.num_local
        )
        local = torch.where(in_shard, all_labels - self.class_start, -1)
        if not self.training or self.num_sample >= self.num_local:
            return None, local
        step = self.sample_step
        self.sample_step += 1
        positives = torch.unique(local[in_shard])  # sorted
        if positives.numel() >= self.num_sample:
            index = positives
        else:
            device = all_labels.device
            gen = torch.Generator(device=device)
            gen.manual_seed(derive_seed("partial_fc.sample", self.seed, self.rank, step))
            score = torch.rand(self.num_local, generator=gen, device=device)
            score[positives] = 2.0
            index = torch.topk(score, self.num_sample, sorted=False).indices.sort().values
        remapped = torch.searchsorted(index, local.clamp_min(0))
        return index, torch.where(in_shard, remapped, -1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings must be (N, {self.embedding_size}), got {tuple(embeddings.shape)}"
            )
        labels = labels.reshape(-1).to(device=embeddings.device, dtype=torch.long)
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {embeddings.shape[0]} embeddings")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            if self.distributed:
                group = self.process_group
                sizes = _gather_sizes(
                    embeddings.shape[0], embeddings.device, group, self.world_size
                )
                all_emb = _AllGatherRows.apply(embeddings, sizes, self.rank, group)
                all_labels = _gather_rows(labels, sizes, group)
            else:
                all_emb, all_labels = embeddings, labels
            index, local_labels = self._sample(all_labels)
            self.last_index = index
            weight = self._centres(index)
            x = F.normalize(all_emb.to(weight.dtype), dim=1)
            cos = F.linear(x, F.normalize(weight, dim=1)).clamp(-1.0, 1.0)
            if self.has_margin:
                rows = (local_labels >= 0).nonzero().squeeze(1)
                cols = local_labels[rows]
                cos_t = cos[rows, cols]
                if self.straight_through:
                    with torch.no_grad():
                        shift = margin_target(cos_t, self.m1, self.m2, self.m3, eps=self.eps)
                        shift = shift - cos_t
                    target = cos_t + shift
                else:
                    target = margin_target(cos_t, self.m1, self.m2, self.m3, eps=self.eps)
                cos = cos.index_put((rows, cols), target)
            return _DistSoftmaxCrossEntropy.apply(
                self.s * cos, local_labels, self.process_group, self.distributed
            )

    def _centres(self, index: torch.Tensor | None) -> torch.Tensor:
        """This forward's centres: a fresh leaf (recorded for :meth:`step`) when grad is on."""
        if not torch.is_grad_enabled():
            return self.weight if index is None else self.weight.index_select(0, index)
        if index is None:
            leaf = self.weight.detach().requires_grad_(True)  # shares storage, no copy
        else:
            leaf = self.weight.index_select(0, index).requires_grad_(True)
        self._pending.append((index, leaf))
        return leaf

    # ---------------------------------------------------------------- optimiser
    def _pending_grad(self) -> tuple[torch.Tensor | None, torch.Tensor] | None:
        """``(rows or None for all, summed gradient of those rows)`` since the last step."""
        pending = [(i, leaf.grad) for i, leaf in self._pending if leaf.grad is not None]
        if not pending:
            return None
        if len(pending) == 1:
            return pending[0]  # type: ignore[return-value]
        if all(i is None for i, _ in pending):
            return None, torch.stack([g for _, g in pending]).sum(0)  # type: ignore[misc]
        every = torch.arange(self.num_local, device=self.weight.device)
        index = torch.cat([every if i is None else i for i, _ in pending])
        grads = torch.cat([g for _, g in pending])  # type: ignore[misc]
        rows, inverse = torch.unique(index, return_inverse=True)
        summed = grads.new_zeros(rows.shape[0], grads.shape[1]).index_add_(0, inverse, grads)
        return rows, summed

    def shard_grad(self) -> torch.Tensor:
        """The gradient accumulated for the whole shard since the last step, ``(num_local, D)``."""
        out = torch.zeros_like(self.weight)
        pending = self._pending_grad()
        if pending is not None:
            index, grad = pending
            if index is None:
                out += grad
            else:
                out.index_copy_(0, index, grad)
        return out

    def grads_finite(self) -> torch.Tensor:
        """Whether every centre gradient recorded since the last step is finite (0-dim bool)."""
        grads = [leaf.grad for _, leaf in self._pending if leaf.grad is not None]
        if not grads:
            return torch.ones((), dtype=torch.bool, device=self.weight.device)
        return torch.stack([torch.isfinite(g).all() for g in grads]).all()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients recorded since the last :meth:`step` (no update)."""
        self._pending.clear()

    @torch.no_grad()
    def step(
        self,
        lr: float,
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        grad_scale: float | torch.Tensor | None = None,
    ) -> bool:
        """SGD on the centres sampled since the last step; the others are left untouched.

        Per sampled row, like ``torch.optim.SGD`` (dampening 0): ``d = g + wd·w``;
        ``buf = momentum·buf + d``; ``w −= lr·(d + momentum·buf if nesterov else buf)``. The
        momentum buffer of a row starts at zero, which matches SGD's first step ``buf = d``.
        ``grad_scale``: divide the gradients by it (AMP) and skip the update if any is not
        finite. Returns whether an update was applied. Consumes the recorded gradients.
        """
        pending = self._pending_grad()
        self._pending.clear()
        if pending is None:
            return False
        index, grad = pending
        if grad_scale is not None:
            grad = grad / grad_scale
            if not bool(torch.isfinite(grad).all()):
                return False
        if index is None:
            weight, buf = self.weight, self.momentum_buffer
        else:
            weight = self.weight.index_select(0, index)
            buf = self.momentum_buffer.index_select(0, index)
        d_p = grad.add(weight, alpha=weight_decay) if weight_decay != 0 else grad
        if momentum != 0:
            buf.mul_(momentum).add_(d_p)
            d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
        weight.add_(d_p, alpha=-lr)
        if index is not None:
            self.weight.index_copy_(0, index, weight)
            if momentum != 0:
                self.momentum_buffer.index_copy_(0, index, buf)
        return True

    # ---------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "sample_step": self.sample_step,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "embedding_size": self.embedding_size,
            "class_start": self.class_start,
            "num_local": self.num_local,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for key in ("num_classes", "embedding_size", "class_start", "num_local"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"PartialFC checkpoint shard does not match: {key} is {state[key]} in the "
                    f"checkpoint, {getattr(self, key)} here (rank {state['rank']} of "
                    f"{state['world_size']} vs rank {self.rank} of {self.world_size})"
                )
        self.sample_step = int(state["sample_step"])
        self.seed = int(state["seed"])
        self._pending.clear()

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"rank={self.rank}/{self.world_size}, class_start={self.class_start}, "
            f"num_local={self.num_local}, sample_rate={self.sample_rate}, s={self.s}, "
            f"m1={self.m1}, m2={self.m2}, m3={self.m3}, straight_through={self.straight_through}"
        )
