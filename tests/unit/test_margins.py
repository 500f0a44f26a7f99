"""Margin heads against a float64 reference written from the ArcFace paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arcflow.heads import MarginHead, SoftmaxHead, build_head

pytestmark = pytest.mark.unit

S = 64.0
NUM_CLASSES, DIM = 7, 16
# Angles to each sample's own class centre. Fallback thresholds θ* = (π − m2)/m1:
# arcface 0.5 -> 2.64, combined(1, .3) -> 2.84, combined(.9, .4) -> 3.05, sphereface 1.35 -> 2.33.
# 3.1, 3.13 and π (exactly anti-parallel) are in the fallback region of every margin.
THETAS = (0.3, 1.0, 1.7, 2.2, 2.5, 2.75, 2.95, 3.1, 3.13, math.pi)

CASES = [
    pytest.param("arcface", {"m": 0.5}, (1.0, 0.5, 0.0), id="arcface-0.5"),
    pytest.param("cosface", {"m": 0.35}, (1.0, 0.0, 0.35), id="cosface-0.35"),
    pytest.param("combined", {"m1": 1.0, "m2": 0.3, "m3": 0.2}, (1.0, 0.3, 0.2), id="comb-1-.3-.2"),
    pytest.param(
        "combined", {"m1": 0.9, "m2": 0.4, "m3": 0.15}, (0.9, 0.4, 0.15), id="comb-.9-.4-.15"
    ),
    pytest.param("norm_softmax", {}, (1.0, 0.0, 0.0), id="norm-softmax"),
    pytest.param("sphereface", {"m1": 1.35}, (1.35, 0.0, 0.0), id="sphereface-1.35"),
]


def make_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 embeddings at the angles THETAS from their class centre, the centres, labels."""
    g = torch.Generator().manual_seed(1234)
    weight = torch.randn(NUM_CLASSES, DIM, generator=g, dtype=torch.float64) * 0.01
    labels = torch.arange(len(THETAS)) % NUM_CLASSES
    rows = []
    for i, theta in enumerate(THETAS):
        w = weight[labels[i]] / weight[labels[i]].norm()
        u = torch.randn(DIM, generator=g, dtype=torch.float64)
        u = u - (u @ w) * w
        u = u / u.norm()
        radius = 0.5 + 19.5 * torch.rand((), generator=g, dtype=torch.float64)
        rows.append(radius * (math.cos(theta) * w + math.sin(theta) * u))
    return torch.stack(rows).float(), weight.float(), labels


def reference_logits(
    emb: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, m1: float, m2: float, m3: float
) -> torch.Tensor:
    """s·(cos(m1·θ + m2) − m3) at the target with θ = acos(cos); linear extension past π."""
    cos = F.normalize(emb, dim=1) @ F.normalize(weight, dim=1).T
    t = cos.gather(1, labels[:, None]).squeeze(1)
    theta_star = (math.pi - m2) / m1  # where m1·θ + m2 reaches π
    if theta_star < math.pi:
        fallback = t <= math.cos(theta_star)
    else:
        fallback = torch.zeros_like(t, dtype=torch.bool)
    theta = torch.acos(torch.where(fallback, torch.zeros_like(t), t))  # no acos'(±1) in backward
    delta = math.pi - theta_star
    target = torch.where(fallback, t - delta * math.sin(delta), torch.cos(m1 * theta + m2)) - m3
    onehot = F.one_hot(labels, cos.shape[1]).bool()
    return S * torch.where(onehot, target[:, None], cos)


def head_with(kind: str, weight: torch.Tensor, **kwargs: float) -> MarginHead:
    head = build_head(kind, DIM, NUM_CLASSES, s=S, **kwargs)
    assert isinstance(head, MarginHead)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def grads(head: MarginHead, emb: torch.Tensor, labels: torch.Tensor, probe: torch.Tensor):
    """(logits, d<logits, probe>/d emb, d<logits, probe>/d W) from the head in float32."""
    head.zero_grad()
    x = emb.clone().requires_grad_(True)
    logits = head(x, labels)
    (logits * probe).sum().backward()
    return logits.detach(), x.grad, head.weight.grad.clone()


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Max abs error within ``tol`` of the expected tensor's largest magnitude."""
    scale = expected.abs().max().item()
    err = (actual.double() - expected).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3e} > {tol:g} * {scale:.3e}"


@pytest.mark.parametrize(("kind", "kwargs", "margins"), CASES)
def test_logits_and_gradients_match_float64_reference(kind, kwargs, margins) -> None:
    emb, weight, labels = make_data()
    probe = torch.randn(len(THETAS), NUM_CLASSES, generator=torch.Generator().manual_seed(7))
    logits, g_emb, g_w = grads(head_with(kind, weight, **kwargs), emb, labels, probe)

    emb64 = emb.double().requires_grad_(True)
    w64 = weight.double().requires_grad_(True)
    ref = reference_logits(emb64, w64, labels, *margins)
    (ref * probe.double()).sum().backward()

    assert logits.dtype == torch.float32
    # Logits compared in cosine units (logits / s): float32 rounding is ~2e-7 there.
    torch.testing.assert_close(logits.double() / S, ref.detach() / S, rtol=0, atol=1e-5)
    assert_close_scaled(g_emb, emb64.grad)
    assert_close_scaled(g_w, w64.grad)
    assert torch.isfinite(g_emb).all() and torch.isfinite(g_w).all()


@pytest.mark.parametrize(("m1", "m2", "m3"), [(1.0, 0.5, 0.0), (1.0, 0.3, 0.2), (0.9, 0.4, 0.15)])
def test_fallback_region_uses_linear_extension(m1: float, m2: float, m3: float) -> None:
    emb, weight, labels = make_data()
    head = head_with("combined", weight, m1=m1, m2=m2, m3=m3)
    with torch.no_grad():
        cos_t = head.cosine(emb).gather(1, labels[:, None]).squeeze(1).double()
        target = head(emb, labels).gather(1, labels[:, None]).squeeze(1).double()
    theta_star = (math.pi - m2) / m1
    in_fallback = cos_t < math.cos(theta_star)  # θ > θ*: anti-parallel-ish samples
    assert in_fallback.sum() >= 3
    delta = math.pi - theta_star
    expected = S * (cos_t - delta * math.sin(delta) - m3)
    torch.testing.assert_close(
        target[in_fallback] / S, expected[in_fallback] / S, rtol=0, atol=1e-6
    )
    # ... and it is not the (non-monotonic) margined value there.
    naive = S * (torch.cos(m1 * torch.acos(cos_t) + m2) - m3)
    assert ((target - naive)[in_fallback].abs() > 1e-2).all()
    if m1 == 1.0:  # ArcFace form: cos θ − m·sin m
        torch.testing.assert_close(
            target[in_fallback] / S,
            cos_t[in_fallback] - m2 * math.sin(m2) - m3,
            rtol=0,
            atol=1e-6,
        )


def test_straight_through_has_arcface_logits_and_norm_softmax_gradient() -> None:
    emb, weight, labels = make_data()
    probe = torch.randn(len(THETAS), NUM_CLASSES, generator=torch.Generator().manual_seed(3))
    arc = grads(head_with("arcface", weight, m=0.5), emb, labels, probe)
    st = grads(head_with("arcface", weight, m=0.5, straight_through=True), emb, labels, probe)
    plain = grads(head_with("norm_softmax", weight), emb, labels, probe)

    torch.testing.assert_close(st[0] / S, arc[0] / S, rtol=0, atol=1e-6)
    torch.testing.assert_close(st[1], plain[1])
    torch.testing.assert_close(st[2], plain[2])
    # The default (paper) head's gradient does flow through the margin.
    assert (arc[1] - plain[1]).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("arcface", {"m": 0.5}),
        ("combined", {"m1": 0.9, "m2": 0.4, "m3": 0.15}),
        ("sphereface", {"m1": 1.35}),
        ("cosface", {"m": 0.35}),
    ],
)
def test_gradient_finite_when_cos_is_exactly_one(kind: str, kwargs: dict[str, float]) -> None:
    labels = torch.tensor([0, 3, 5])
    weight = 0.5 * torch.eye(NUM_CLASSES, DIM)
    emb = 3.0 * torch.eye(NUM_CLASSES, DIM)[labels]
    head = head_with(kind, weight, **kwargs)
    assert (head.cosine(emb).gather(1, labels[:, None]) == 1.0).all()
    logits, g_emb, g_w = grads(head, emb, labels, torch.ones(3, NUM_CLASSES))
    assert torch.isfinite(logits).all()
    assert torch.isfinite(g_emb).all() and torch.isfinite(g_w).all()
    loss = head.loss(emb.clone().requires_grad_(True), labels)
    loss.backward()
    assert torch.isfinite(loss)


def test_build_head_kinds_and_margins() -> None:
    assert isinstance(build_head("softmax", DIM, NUM_CLASSES), SoftmaxHead)
    expected = {
        "norm_softmax": (1.0, 0.0, 0.0),
        "sphereface": (1.5, 0.0, 0.0),
        "cosface": (1.0, 0.0, 0.4),
        "arcface": (1.0, 0.4, 0.0),
        "combined": (1.5, 0.2, 0.1),
    }
    for kind, margins in expected.items():
        head = build_head(kind, DIM, NUM_CLASSES, s=30.0, m=0.4, m1=1.5, m2=0.2, m3=0.1)
        assert isinstance(head, MarginHead)
        assert (head.m1, head.m2, head.m3, head.s) == (*margins, 30.0)
        assert head.weight.shape == (NUM_CLASSES, DIM)
    with pytest.raises(ValueError, match="arcface"):
        build_head("nope", DIM, NUM_CLASSES)


@pytest.mark.parametrize("kind", ["softmax", "norm_softmax", "sphereface", "cosface", "arcface"])
def test_every_head_gives_logits_for_cross_entropy(kind: str) -> None:
    torch.manual_seed(0)
    head = build_head(kind, DIM, NUM_CLASSES, m1=1.35)
    emb = torch.randn(5, DIM, requires_grad=True)
    labels = torch.randint(0, NUM_CLASSES, (5,))
    logits = head(emb, labels)
    assert logits.shape == (5, NUM_CLASSES)
    loss = F.cross_entropy(logits, labels)
    torch.testing.assert_close(head.loss(emb, labels), loss)
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_softmax_head_is_linear_on_raw_embedding() -> None:
    head = SoftmaxHead(DIM, NUM_CLASSES)
    emb = 10.0 * torch.randn(4, DIM)
    expected = emb @ head.fc.weight.T + head.fc.bias
    torch.testing.assert_close(head(emb, torch.zeros(4, dtype=torch.long)), expected)


def test_margin_head_computes_in_float32_under_autocast() -> None:
    emb, weight, labels = make_data()
    head = head_with("arcface", weight, m=0.5)
    expected = head(emb, labels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = head(emb.bfloat16(), labels)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits / S, expected / S, rtol=0, atol=1e-2)
