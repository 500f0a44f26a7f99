"""Extra loss terms from the ArcFace paper's loss comparison: Intra, Inter and (angular) Triplet.

Notation: a batch of ``N`` embeddings ``x_i`` with labels ``y_i``; ``n`` class centres ``W_j`` (the
rows of :attr:`MarginHead.weight`); a hat means L2-normalised; ``θ_{i,j}`` is the angle between
``x̂_i`` and ``Ŵ_j``. Every ``arccos`` is taken of a cosine clamped to ``[-1 + eps, 1 - eps]``
(``eps = 1e-7``), so gradients stay finite when two vectors are parallel (cos = ±1): there the
gradient is 0 instead of ``inf``/NaN.

* Intra (pulls samples to their own centre; ``L5 = L2 + intra``)::

      intra = 1/(π N) · Σ_i θ_{i,y_i}

* Inter (pushes centres apart; ``L6 = L2 + inter``; minimising it increases the angles)::

      inter = −1/(π N (n − 1)) · Σ_i Σ_{j ≠ y_i} arccos(Ŵ_{y_i}ᵀ Ŵ_j)

  The inner sum depends only on ``y_i``, so it is computed once per *unique* label in the batch
  and weighted by that label's count: ``O(U·n·D)`` time and ``O(U·n)`` memory for ``U`` unique
  labels, never ``N·n·n``.

* Triplet (angular, on L2-normalised embeddings within the batch; the paper asks for
  ``arccos(x̂_p·x̂_a) + m ≤ arccos(x̂_n·x̂_a)``, table row ``m = 0.35`` rad)::

      triplet = mean over valid anchors a of relu(θ_{a,p*} + m − θ_{a,n*})

  The paper does not say how triplets are mined; we use **batch-hard** mining: for each anchor
  ``a`` that has at least one positive (same label, another sample) and one negative (other
  label) in the batch, ``p*`` is the positive at the *largest* angle and ``n*`` the negative at
  the *smallest* angle. Anchors without both are skipped; with none left the loss is a zero that
  is still connected to the embeddings' graph. Pair this with a P×K identity sampler
  (:class:`arcflow.train.identity_batches.IdentityBatchSampler`) so that every anchor has positives.

:func:`extra_loss` sums a selection of these terms (the classification loss of the head is not
included; the trainer adds ``head.loss``). All terms compute in fp32 (or fp64 if given fp64), with
autocast disabled, like the heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from arcflow.heads.margins import MarginHead, SoftmaxHead

#: Term names accepted by :func:`extra_loss`.
LOSS_TERMS: tuple[str, ...] = ("intra", "inter", "triplet")

#: Margin of the paper's triplet rows, in radians.
TRIPLET_MARGIN: float = 0.35

_EPS = 1e-7


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _safe_acos(cos: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``arccos`` of ``cos`` clamped to ``[-1 + eps, 1 - eps]``: finite gradient (0) at ±1."""
    return torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))


def _check_labels(labels: torch.Tensor, n: int) -> torch.Tensor:
    labels = labels.long().view(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"labels must lie in [0, {n}), got range [{labels.min()}, {labels.max()}]")
    return labels


def intra_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, *, eps: float = _EPS
) -> torch.Tensor:
    """``1/(πN) Σ_i θ_{y_i}``: mean angle (in units of π) between each sample and its centre.

    ``embeddings`` (N, D), ``labels`` (N,), ``weight`` (n, D) class centres. Returns a scalar.
    """
    if embeddings.ndim != 2 or weight.ndim != 2 or embeddings.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected embeddings (N, D) and weight (n, D), got {tuple(embeddings.shape)} and "
            f"{tuple(weight.shape)}"
        )
    labels = _check_labels(labels, weight.shape[0])
    if labels.numel() != embeddings.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {embeddings.shape[0]} embeddings")
    dtype = _compute_dtype(embeddings, weight)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        x = F.normalize(embeddings.to(dtype), dim=1)
        w = F.normalize(weight.to(dtype)[labels], dim=1)
        theta = _safe_acos((x * w).sum(dim=1), eps)
        return theta.mean() / math.pi


def inter_loss(labels: torch.Tensor, weight: torch.Tensor, *, eps: float = _EPS) -> torch.Tensor:
    """``−1/(πN(n−1)) Σ_i Σ_{j≠y_i} arccos(Ŵ_{y_i}ᵀ Ŵ_j)`` for ``weight`` (n, D), ``n ≥ 2``.

    Computed per unique label in ``labels`` (count-weighted): ``O(U·n·D)``, not ``N·n·n``.
    """
    if weight.ndim != 2:
        raise ValueError(f"expected weight (n, D), got {tuple(weight.shape)}")
    n = weight.shape[0]
    if n < 2:
        raise ValueError(f"inter loss needs at least 2 classes, got {n}")
    labels = _check_labels(labels, n)
    if labels.numel() == 0:
        raise ValueError("inter loss needs a non-empty batch of labels")
    unique, counts = torch.unique(labels, return_counts=True)
    dtype = _compute_dtype(weight)
    with torch.autocast(device_type=weight.device.type, enabled=False):
        w = F.normalize(weight.to(dtype), dim=1)  # (n, D)
        theta = _safe_acos(w[unique] @ w.T, eps)  # (U, n)
        own = F.one_hot(unique, n).bool()
        theta = theta.masked_fill(own, 0.0)  # drop j = y_i (cos ≈ 1 there anyway)
        per_label = theta.sum(dim=1)  # Σ_{j≠y} θ_{y,j}
        total = (counts.to(dtype) * per_label).sum()
        return -total / (math.pi * labels.numel() * (n - 1))


def triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = TRIPLET_MARGIN,
    *,
    eps: float = _EPS,
) -> torch.Tensor:
    """Batch-hard angular triplet: mean over anchors of ``relu(θ_ap + margin − θ_an)``.

    ``θ_ap`` is the largest angle to a positive (same label, other sample), ``θ_an`` the smallest
    angle to a negative; angles between L2-normalised embeddings, ``margin`` in radians. Anchors
    without a positive or a negative are skipped; if none is left, returns a zero that is still
    connected to ``embeddings`` (so ``backward`` works and gives zero gradients).
    """
    if embeddings.ndim != 2:
        raise ValueError(f"expected embeddings (N, D), got {tuple(embeddings.shape)}")
    labels = labels.long().view(-1)
    if labels.numel() != embeddings.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {embeddings.shape[0]} embeddings")
    dtype = _compute_dtype(embeddings)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        x = F.normalize(embeddings.to(dtype), dim=1)
        theta = _safe_acos(x @ x.T, eps)  # (N, N)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive = same & ~eye
        negative = ~same
        valid = positive.any(dim=1) & negative.any(dim=1)
        if not bool(valid.any()):
            return 0.0 * x.sum()  # connected to ``embeddings``, in the compute dtype
        hardest_pos = theta.masked_fill(~positive, -math.inf).amax(dim=1)
        hardest_neg = theta.masked_fill(~negative, math.inf).amin(dim=1)
        return F.relu(hardest_pos[valid] + margin - hardest_neg[valid]).mean()


def _centres(head: nn.Module | None, term: str) -> torch.Tensor:
    """The ``(n, D)`` class centres of a :class:`MarginHead`, or a ValueError saying why not.

    Only :class:`MarginHead` is accepted: its ``weight`` is the full centre matrix with ordinary
    autograd. Plain softmax has no normalised centres; other heads (e.g. a sharded, class-sampled
    one) would need their own handling of the centres and their gradients.
    """
    if not isinstance(head, MarginHead):
        kind = type(head).__name__ if head is not None else "no head"
        hint = (
            " Plain softmax (a Linear layer with bias) has no class centres on the hypersphere."
            if isinstance(head, SoftmaxHead)
            else ""
        )
        raise ValueError(
            f"loss term {term!r} needs a MarginHead with normalised class centres (kind "
            f"norm_softmax, arcface, cosface, ...); got {kind}.{hint}"
        )
    return head.weight


def extra_loss(
    terms: Sequence[str],
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module | None = None,
    triplet_margin: float = TRIPLET_MARGIN,
) -> torch.Tensor:
    """Sum of the selected terms (``"intra"``, ``"inter"``, ``"triplet"``), each with weight 1.

    ``intra`` and ``inter`` use ``head.weight`` (a :class:`~arcflow.heads.MarginHead`); ``triplet``
    needs no head. Raises ``ValueError`` for an unknown or repeated term, or for ``intra``/``inter``
    with a head without class centres (plain softmax). With no terms, returns a connected zero.
    """
    if isinstance(terms, str):
        raise ValueError(f"terms must be a sequence of names, not the string {terms!r}")
    names = [str(t).strip().lower() for t in terms]
    unknown = [t for t in names if t not in LOSS_TERMS]
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; allowed: {', '.join(LOSS_TERMS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated loss term in {list(terms)}")
    needs_centres = [t for t in names if t in ("intra", "inter")]
    weight = _centres(head, needs_centres[0]) if needs_centres else None
    parts: list[torch.Tensor] = []
    for name in names:
        if name == "intra":
            assert weight is not None
            parts.append(intra_loss(embeddings, labels, weight))
        elif name == "inter":
            assert weight is not None
            parts.append(inter_loss(labels, weight))
        else:
            parts.append(triplet_loss(embeddings, labels, triplet_margin))
    if not parts:
        return 0.0 * embeddings.to(_compute_dtype(embeddings)).sum()
    return sum(parts[1:], parts[0])
