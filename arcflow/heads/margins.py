"""Classification heads for face-embedding training: plain softmax and margin-based softmax.

Every head maps ``(embeddings (N, D), labels (N,))`` to logits ``(N, C)``; the loss is plain
cross-entropy on them: ``F.cross_entropy(head(emb, y), y)``.

Margin heads follow the combined-margin framework of the ArcFace paper (Deng et al., CVPR 2019):
with ``cos θ_j = <x/|x|, W_j/|W_j|>``, the target logit is ``s·(cos(m1·θ_y + m2) − m3)`` and every
other logit ``s·cos θ_j``. SphereFace is ``m1``, ArcFace ``m2``, CosFace ``m3``.

Where ``m1·θ + m2`` passes π the target would stop decreasing in θ. There we switch to the
paper's linear extension ``cos θ − Δ·sin Δ − m3`` with ``Δ = π − θ*`` and
``θ* = (π − m2) / m1`` the angle where ``m1·θ + m2 = π``. For ArcFace (``m1 = 1``) ``Δ = m2``, which
gives the paper's ``cos θ − m·sin m``. This extension is monotonic in θ but not continuous at θ*.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Head kinds accepted by :func:`build_head`.
HEAD_KINDS: tuple[str, ...] = (
    "softmax",
    "norm_softmax",
    "sphereface",
    "cosface",
    "arcface",
    "combined",
)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= 0``."""
    positive = x > 0
    root = torch.sqrt(torch.where(positive, x, torch.ones_like(x)))
    return torch.where(positive, root, torch.zeros_like(x))


def margin_target(
    cos_t: torch.Tensor,
    m1: float = 1.0,
    m2: float = 0.0,
    m3: float = 0.0,
    *,
    eps: float = 1e-7,
) -> torch.Tensor:
    """The margined target cosine ``cos(m1·θ + m2) − m3`` (with the linear extension past θ*).

    ``cos_t`` holds ``cos θ`` of each sample's own class, already clamped to ``[-1, 1]``.
    With ``m1 = 1`` no arccos is taken: ``cos(θ + m2) = cos θ·cos m2 − sin θ·sin m2`` with
    ``sin θ = sqrt(1 − cos² θ)``, which keeps the gradient finite at ``cos θ = ±1``. Otherwise
    ``θ = acos(clamp(cos θ, −1 + eps, 1 − eps))``. Gradients flow through the margin.
    """
    if m1 <= 0:
        raise ValueError(f"m1 must be positive, got {m1}")
    if m1 == 1.0 and m2 == 0.0:  # CosFace / norm-softmax
        return cos_t - m3
    if m1 == 1.0:  # ArcFace via the angle-addition identity
        sin_t = _safe_sqrt(1.0 - cos_t * cos_t)
        margined = cos_t * math.cos(m2) - sin_t * math.sin(m2)
    else:
        theta = torch.acos(cos_t.clamp(-1.0 + eps, 1.0 - eps))
        margined = torch.cos(m1 * theta + m2)
    theta_star = (math.pi - m2) / m1
    if theta_star >= math.pi:  # m1·θ + m2 never passes π
        return margined - m3
    delta = math.pi - theta_star
    extension = cos_t - delta * math.sin(delta)
    in_range = cos_t > math.cos(theta_star)
    return torch.where(in_range, margined, extension) - m3


def check_head_args(embedding_size: int, num_classes: int, s: float, m1: float) -> None:
    """The constructor arguments every margin head shares, checked with clear messages."""
    if embedding_size < 1 or num_classes < 1:
        raise ValueError(
            f"embedding_size and num_classes must be positive, got {embedding_size}, {num_classes}"
        )
    if s <= 0:
        raise ValueError(f"scale s must be positive, got {s}")
    if m1 <= 0:
        raise ValueError(f"m1 must be positive, got {m1}")


class _CrossEntropyLoss:
    """Adds ``loss(embeddings, labels)``: mean cross-entropy on the head's logits."""

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(embeddings, labels), labels)  # type: ignore[operator]


class MarginHead(_CrossEntropyLoss, nn.Module):
    """Combined-margin softmax head: target logit ``s·(cos(m1·θ + m2) − m3)``, others ``s·cos θ``.

    ``weight`` is the ``(num_classes, embedding_size)`` class-centre matrix, init ``N(0, 0.01)``.
    With ``straight_through=True`` the margin is added to the target logit without gradient
    (insightface's current behaviour): same logits, but the gradient of plain norm-softmax.
    The head always computes in fp32 (autocast is disabled inside).
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.0,
        m3: float = 0.0,
        straight_through: bool = False,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        check_head_args(embedding_size, num_classes, s, m1)
        self.s = float(s)
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)
        self.straight_through = straight_through
        self.eps = eps
        #: SphereFace's annealing λ: target = (λ·cos θ + ψ(θ)) / (1 + λ); 0 = no blending.
        self.blend = 0.0
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, 0.0, 0.01)

    @property
    def has_margin(self) -> bool:
        return not (self.m1 == 1.0 and self.m2 == 0.0 and self.m3 == 0.0)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``cos θ`` between each embedding and each class centre, ``(N, C)``, in ``[-1, 1]``."""
        x = F.normalize(embeddings.to(self.weight.dtype), dim=1)
        w = F.normalize(self.weight, dim=1)
        return F.linear(x, w).clamp(-1.0, 1.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            if not self.has_margin:
                return self.s * cos
            index = labels.long().view(-1, 1)
            cos_t = cos.gather(1, index)
            if self.straight_through:
                with torch.no_grad():
                    shift = margin_target(cos_t, self.m1, self.m2, self.m3, eps=self.eps) - cos_t
                target = cos_t + shift
            else:
                target = margin_target(cos_t, self.m1, self.m2, self.m3, eps=self.eps)
            if self.blend > 0:
                target = (self.blend * cos_t + target) / (1.0 + self.blend)
            return self.s * cos.scatter(1, index, target)

    def extra_repr(self) -> str:
        classes, dim = self.weight.shape
        return (
            f"embedding_size={dim}, num_classes={classes}, s={self.s}, m1={self.m1}, "
            f"m2={self.m2}, m3={self.m3}, straight_through={self.straight_through}"
        )


class SoftmaxHead(_CrossEntropyLoss, nn.Module):
    """Plain softmax: ``Linear(embedding_size, num_classes)`` on the raw embedding."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes, bias=True)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, C)``; ``labels`` is unused and accepted for a uniform head interface."""
        return self.fc(embeddings.to(self.fc.weight.dtype))


def head_margins(
    kind: str, *, m: float = 0.5, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0
) -> tuple[float, float, float]:
    """``(m1, m2, m3)`` of a margin head kind: ``norm_softmax`` none, ``sphereface`` ``m1``,
    ``cosface`` ``m3 = m``, ``arcface`` ``m2 = m``, ``combined`` all three as given."""
    margins = {
        "norm_softmax": (1.0, 0.0, 0.0),
        "sphereface": (m1, 0.0, 0.0),
        "cosface": (1.0, 0.0, m),
        "arcface": (1.0, m, 0.0),
        "combined": (m1, m2, m3),
    }
    if kind not in margins:
        raise ValueError(f"unknown margin head kind {kind!r}; allowed: {', '.join(margins)}")
    return margins[kind]


def build_head(
    kind: str,
    embedding_size: int,
    num_classes: int,
    *,
    s: float = 64.0,
    m: float = 0.5,
    m1: float = 1.0,
    m2: float = 0.0,
    m3: float = 0.0,
    straight_through: bool = False,
) -> nn.Module:
    """Build a head by kind.

    ``softmax``: :class:`SoftmaxHead`; margin kinds: :class:`MarginHead` with the margins of
    :func:`head_margins`. Raises ``ValueError`` for an unknown kind.
    """
    key = kind.strip().lower()
    if key == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    k1, k2, k3 = head_margins(key, m=m, m1=m1, m2=m2, m3=m3)
    return MarginHead(
        embedding_size,
        num_classes,
        s=s,
        m1=k1,
        m2=k2,
        m3=k3,
        straight_through=straight_through,
    )
