"""Classification heads for face-embedding training: plain softmax and margin-based softmax.

Every head maps ``(embeddings (N, D), labels (N,))`` to logits ``(N, C)``; the loss is plain
cross-entropy on them: ``F.cross_entropy(head(emb, y), y)``.

Margin heads follow the combined-margin framework of the ArcFace paper (Deng et al., CVPR 2019):
with ``cos θ_j = <x/|x|, W_j/|W_j|>``, the target logit is ``s·(cos(m1·θ_y + m2) − m3)`` and every
other logit ``s·cos θ_j``. SphereFace is ``m1``, ArcFace ``m2``, CosFace ``m3``.

**Defaults are the paper's.** :func:`build_head` and :func:`head_margins` take every margin as
``None`` = "the paper's value for this head" (:data:`PAPER_MARGINS`, the rows of its loss table):
SphereFace ``m1 = 1.35``, CosFace ``m3 = 0.35``, ArcFace ``m2 = 0.5``, combined = CM1
``(1, 0.3, 0.2)`` (CM2 ``(0.9, 0.4, 0.15)`` is :data:`CM2`). A margin head given margins that
leave it with none (``arcface`` with ``m = 0``, ``combined`` with ``(1, 0, 0)``, ``sphereface``
with ``m1 <= 1``) is refused; ``norm_softmax`` is the margin-less head.

**Past θ*.** Where ``φ = m1·θ + m2`` passes π, ``cos φ`` would stop decreasing in θ; θ* =
``(π − m2) / m1`` is the angle where ``φ = π``. Two choices for ``θ > θ*`` (``psi``):

* ``"extension"`` (default for every head): ``cos θ − Δ·sin Δ`` with ``Δ = π − θ*``. For
  ArcFace (``m1 = 1``) ``Δ = m2``: the fallback of insightface's earlier code,
  ``cos θ − m·sin m``; for ``m1 ≠ 1`` it is our generalisation. Both pieces decrease in θ, but the
  extension jumps at θ* from ``−1`` to ``−cos Δ − Δ·sin Δ``; the target is monotonic in θ exactly
  when that jump goes down: ``cos Δ + Δ·sin Δ >= 1``, i.e. ``Δ <= 2.33112…``
  (:data:`EXTENSION_MAX_DELTA`, the root in ``(π/2, π)``), i.e. ``θ* >= 0.81047…`` rad. With
  ``m2 = 0`` (SphereFace) that is ``m1 <= 3.8763…`` (:data:`EXTENSION_MAX_M1`): fine for the
  paper's 1.35, **not monotonic for the original SphereFace's m1 = 4**. :func:`head_margins`
  refuses extension margins past this bound.
* ``"original"``: SphereFace's ψ, ``ψ(θ) = (−1)^k·cos(φ) − 2k`` for ``φ ∈ [kπ, (k+1)π]`` (SphereFace
  writes it with ``m2 = 0``: ``θ ∈ [kπ/m1, (k+1)π/m1]``). Each piece falls from ``1 − 2k`` to
  ``−1 − 2k`` (the first from ``cos m2``), so ψ is continuous and strictly decreasing on
  ``[0, π]`` for every ``m1 > 0`` and ``m2 >= 0``.

Both agree for θ <= θ*. Why ``extension`` is the default, SphereFace included: the ArcFace
paper's table gives SphereFace (1.35) as one row of the combined-margin framework, next to
CosFace, ArcFace, CM1 and CM2; with one rule past θ* for every head the rows differ only in
their margins. For ``m1 = 1.35`` (θ* = π/1.35 ≈ 133°) the extension is monotonic and differs
from ψ only for target angles past 133°, which training samples rarely reach (random centres
sit near 90°). Choose ``psi="original"`` (``train.sphereface_psi: original``) for SphereFace's
own ψ, which any ``m1`` above 3.876 (such as the SphereFace paper's m1 = 4) needs.

SphereFace is also blended with the plain cosine by an annealed λ (:attr:`MarginHead.blend`, set
by the trainer from ``train.sphereface_lambda``): target ``(λ·cos θ + ψ(θ)) / (1 + λ)``.
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

#: ``(m1, m2, m3)`` of each margin head kind by default: the ArcFace paper's loss table
#: (CASIA, ResNet50): SphereFace (1.35), CosFace (0.35), ArcFace (0.5), CM1 (1, 0.3, 0.2).
PAPER_MARGINS: dict[str, tuple[float, float, float]] = {
    "norm_softmax": (1.0, 0.0, 0.0),
    "sphereface": (1.35, 0.0, 0.0),
    "cosface": (1.0, 0.0, 0.35),
    "arcface": (1.0, 0.5, 0.0),
    "combined": (1.0, 0.3, 0.2),
}
#: The table's other combined-margin row, CM2 ``(m1, m2, m3)``.
CM2: tuple[float, float, float] = (0.9, 0.4, 0.15)

#: What the target follows past θ* (see the module docstring).
PSI_KINDS: tuple[str, ...] = ("extension", "original")

#: The root of ``cos Δ + Δ·sin Δ = 1`` in ``(π/2, π)``: the linear extension is monotonic in θ
#: iff ``Δ = π − θ* <= EXTENSION_MAX_DELTA`` (``tests/unit/test_head_defaults.py`` recomputes it).
EXTENSION_MAX_DELTA = 2.3311223704144224
#: With ``m2 = 0`` (SphereFace): the extension is monotonic iff ``m1 <= π / (π − Δ_max)``.
EXTENSION_MAX_M1 = math.pi / (math.pi - EXTENSION_MAX_DELTA)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= 0``."""
    positive = x > 0
    root = torch.sqrt(torch.where(positive, x, torch.ones_like(x)))
    return torch.where(positive, root, torch.zeros_like(x))


def theta_star(m1: float, m2: float) -> float:
    """θ* = ``(π − m2) / m1``, where ``m1·θ + m2`` reaches π (``>= π``: it never does)."""
    return (math.pi - m2) / m1


def extension_is_monotonic(m1: float, m2: float) -> bool:
    """Whether the ``"extension"`` target is monotonic (non-increasing) in θ over ``[0, π]``."""
    star = theta_star(m1, m2)
    return star >= math.pi or math.pi - star <= EXTENSION_MAX_DELTA


def margin_target(
    cos_t: torch.Tensor,
    m1: float = 1.0,
    m2: float = 0.0,
    m3: float = 0.0,
    *,
    psi: str = "extension",
    eps: float = 1e-7,
) -> torch.Tensor:
    """The margined target cosine ``cos(m1·θ + m2) − m3``, past θ* per ``psi``.

    ``cos_t`` holds ``cos θ`` of each sample's own class, already clamped to ``[-1, 1]``.
    ``psi="extension"``: the linear extension ``cos θ − Δ·sin Δ − m3`` past θ* (monotonic only
    when :func:`extension_is_monotonic`); ``psi="original"``: SphereFace's
    ``(−1)^k·cos(m1·θ + m2) − 2k − m3`` with ``k = floor((m1·θ + m2) / π)`` (monotonic for every
    ``m1``). See the module docstring. With ``m1 = 1`` and the extension no arccos is taken:
    ``cos(θ + m2) = cos θ·cos m2 − sin θ·sin m2`` with ``sin θ = sqrt(1 − cos² θ)``, which keeps
    the gradient finite at ``cos θ = ±1``. Otherwise ``θ = acos(clamp(cos θ, −1 + eps, 1 − eps))``,
    which makes the target flat (not increasing) within ``sqrt(2·eps)`` rad of 0 and π.
    Gradients flow through the margin.
    """
    if m1 <= 0:
        raise ValueError(f"m1 must be positive, got {m1}")
    if psi not in PSI_KINDS:
        raise ValueError(f"psi must be one of {', '.join(PSI_KINDS)}, got {psi!r}")
    if m1 == 1.0 and m2 == 0.0:  # CosFace / norm-softmax: nothing passes π
        return cos_t - m3
    star = theta_star(m1, m2)
    if m1 == 1.0 and (psi == "extension" or star >= math.pi):  # angle-addition identity
        sin_t = _safe_sqrt(1.0 - cos_t * cos_t)
        margined = cos_t * math.cos(m2) - sin_t * math.sin(m2)
        phi = None
    else:
        theta = torch.acos(cos_t.clamp(-1.0 + eps, 1.0 - eps))
        phi = m1 * theta + m2
        margined = torch.cos(phi)
    if star >= math.pi:  # m1·θ + m2 never passes π
        return margined - m3
    if psi == "original":
        assert phi is not None
        k = torch.floor(phi.detach() / math.pi).clamp_min(0.0)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        return sign * margined - 2.0 * k - m3
    delta = math.pi - star
    extension = cos_t - delta * math.sin(delta)
    in_range = cos_t > math.cos(star)
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

    The margins given here are used as they are (the defaults are no margin: norm-softmax);
    :func:`build_head` fills in the paper's per head. ``psi`` picks the target past θ*
    (:func:`margin_target`). ``weight`` is the ``(num_classes, embedding_size)`` class-centre
    matrix, init ``N(0, 0.01)``. With ``straight_through=True`` the margin is added to the target
    logit without gradient (insightface's current behaviour): same logits, but the gradient of
    plain norm-softmax. ``blend`` (λ, SphereFace's annealing; 0 = off) mixes the target with the
    plain cosine: ``(λ·cos θ + target) / (1 + λ)``, whatever the margins. The head always
    computes in fp32 (autocast is disabled inside).
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
        psi: str = "extension",
        straight_through: bool = False,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        check_head_args(embedding_size, num_classes, s, m1)
        if psi not in PSI_KINDS:
            raise ValueError(f"psi must be one of {', '.join(PSI_KINDS)}, got {psi!r}")
        self.s = float(s)
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)
        self.psi = psi
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

    def _margined(self, cos_t: torch.Tensor) -> torch.Tensor:
        return margin_target(cos_t, self.m1, self.m2, self.m3, psi=self.psi, eps=self.eps)

    def target(self, cos_t: torch.Tensor) -> torch.Tensor:
        """The target cosine for ``cos θ`` of each sample's own class: margin, then λ blend."""
        if self.straight_through:
            with torch.no_grad():
                shift = self._margined(cos_t) - cos_t
            margined = cos_t + shift
        else:
            margined = self._margined(cos_t)
        if self.blend > 0:
            margined = (self.blend * cos_t + margined) / (1.0 + self.blend)
        return margined

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            index = labels.long().view(-1, 1)
            return self.s * cos.scatter(1, index, self.target(cos.gather(1, index)))

    def extra_repr(self) -> str:
        classes, dim = self.weight.shape
        return (
            f"embedding_size={dim}, num_classes={classes}, s={self.s}, m1={self.m1}, "
            f"m2={self.m2}, m3={self.m3}, psi={self.psi}, straight_through={self.straight_through}"
        )


class SoftmaxHead(_CrossEntropyLoss, nn.Module):
    """Plain softmax: ``Linear(embedding_size, num_classes)`` on the raw embedding."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes, bias=True)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, C)``; ``labels`` is unused and accepted for a uniform head interface."""
        return self.fc(embeddings.to(self.fc.weight.dtype))


def _fmt(x: float) -> str:
    return f"{x:g}"


def head_margins(
    kind: str,
    *,
    m: float | None = None,
    m1: float | None = None,
    m2: float | None = None,
    m3: float | None = None,
    sphereface_psi: str = "extension",
) -> tuple[float, float, float]:
    """``(m1, m2, m3)`` of a margin head kind, a margin left ``None`` taking the paper's value.

    Which keys each kind reads (the others are ignored): ``norm_softmax`` none (no margin by
    definition); ``sphereface`` ``m1`` (paper 1.35); ``cosface`` ``m`` as ``m3`` (paper 0.35);
    ``arcface`` ``m`` as ``m2`` (paper 0.5); ``combined`` ``m1``, ``m2``, ``m3``, each ``None``
    taking CM1's value (1, 0.3, 0.2). The key names are those of ``train`` in params.yaml.

    Raises ``ValueError`` naming the keys for an unknown kind, a margin head left without a
    margin (or with a negative one), and ``extension`` margins whose target is not monotonic
    in θ (``m1 > 3.876`` for SphereFace: use ``sphereface_psi="original"``).
    """
    if kind not in PAPER_MARGINS:
        allowed = ", ".join(PAPER_MARGINS)
        raise ValueError(f"unknown margin head kind {kind!r}; allowed: {allowed}")
    if sphereface_psi not in PSI_KINDS:
        raise ValueError(
            f"sphereface_psi must be one of {', '.join(PSI_KINDS)}, got {sphereface_psi!r}"
        )
    p1, p2, p3 = PAPER_MARGINS[kind]
    if kind == "norm_softmax":
        return p1, p2, p3
    if kind in ("arcface", "cosface"):
        paper = p2 if kind == "arcface" else p3
        margin = paper if m is None else float(m)
        if margin <= 0:
            raise ValueError(
                f"head {kind} has no margin with m = {_fmt(margin)}: set m > 0 (the paper's "
                f"{_fmt(paper)}) or leave m unset (null) for the paper's value; "
                "head norm_softmax is the margin-less one"
            )
        return (1.0, margin, 0.0) if kind == "arcface" else (1.0, 0.0, margin)
    if kind == "sphereface":
        k1 = p1 if m1 is None else float(m1)
        if k1 <= 1.0:
            raise ValueError(
                f"head sphereface has no margin with m1 = {_fmt(k1)}: set m1 > 1 (the paper's "
                f"{_fmt(p1)}) or leave m1 unset (null) for the paper's value"
            )
        if sphereface_psi == "extension" and not extension_is_monotonic(k1, 0.0):
            raise ValueError(
                f"head sphereface with m1 = {_fmt(k1)} > {EXTENSION_MAX_M1:.4f} and "
                "sphereface_psi 'extension' has a target that is not monotonic in θ: "
                "set sphereface_psi: original (SphereFace's ψ) or a smaller m1"
            )
        return k1, 0.0, 0.0
    k1 = p1 if m1 is None else float(m1)
    k2 = p2 if m2 is None else float(m2)
    k3 = p3 if m3 is None else float(m3)
    given = f"m1 = {_fmt(k1)}, m2 = {_fmt(k2)}, m3 = {_fmt(k3)}"
    if k1 <= 0 or k2 < 0 or k3 < 0:
        raise ValueError(f"head combined needs m1 > 0, m2 >= 0 and m3 >= 0, got {given}")
    if (k1, k2, k3) == (1.0, 0.0, 0.0):
        raise ValueError(
            f"head combined has no margin with {given}: set m1, m2, m3 (the paper's CM1 "
            "1, 0.3, 0.2 or CM2 0.9, 0.4, 0.15) or leave them unset (null) for CM1; "
            "head norm_softmax is the margin-less one"
        )
    if not extension_is_monotonic(k1, k2):
        raise ValueError(
            f"head combined with {given} has θ* = (π − m2)/m1 = {theta_star(k1, k2):.3f} rad, "
            f"below {math.pi - EXTENSION_MAX_DELTA:.4f}: its target is not monotonic in θ "
            "there; lower m1 or m2"
        )
    return k1, k2, k3


def build_head(
    kind: str,
    embedding_size: int,
    num_classes: int,
    *,
    s: float = 64.0,
    m: float | None = None,
    m1: float | None = None,
    m2: float | None = None,
    m3: float | None = None,
    sphereface_psi: str = "extension",
    straight_through: bool = False,
) -> nn.Module:
    """Build a head by kind, with the paper's margins unless given.

    ``softmax``: :class:`SoftmaxHead`; margin kinds: :class:`MarginHead` with the margins of
    :func:`head_margins` (``None`` = the paper's value for this head); ``sphereface_psi`` is the
    target past θ* of ``sphereface`` (every other kind uses the extension). Raises
    ``ValueError`` for an unknown kind or margins :func:`head_margins` refuses.
    """
    key = kind.strip().lower()
    if key == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    k1, k2, k3 = head_margins(key, m=m, m1=m1, m2=m2, m3=m3, sphereface_psi=sphereface_psi)
    return MarginHead(
        embedding_size,
        num_classes,
        s=s,
        m1=k1,
        m2=k2,
        m3=k3,
        psi=sphereface_psi if key == "sphereface" else "extension",
        straight_through=straight_through,
    )
