"""Intra / Inter / Triplet loss terms against plain float64 references; the P×K sampler."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from arcflow.heads import MarginHead, SoftmaxHead, build_head
from arcflow.heads.terms import extra_loss, inter_loss, intra_loss, triplet_loss
from arcflow.train.identity_batches import IdentityBatchSampler

pytestmark = pytest.mark.unit

NUM_CLASSES, DIM = 7, 16
# Classes 4 and 6 are absent from the batch: inter must still move their centres.
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3, 5])


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    """float32 embeddings (various norms) and class centres (N(0, 0.01), as the head inits)."""
    g = torch.Generator().manual_seed(2024)
    emb = torch.randn(len(LABELS), DIM, generator=g) * (
        1 + 9 * torch.rand(len(LABELS), 1, generator=g)
    )
    weight = torch.randn(NUM_CLASSES, DIM, generator=g) * 0.01
    return emb, weight


# ---------------------------------------------------------------- plain float64 references


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def ref_intra(emb: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1/(πN)) Σ_i arccos(x̂_i · Ŵ_{y_i})."""
    n = len(labels)
    total = sum(torch.acos(unit(emb[i]) @ unit(weight[labels[i]])) for i in range(n))
    return total / (math.pi * n)


def ref_inter(labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """−(1/(πN(n−1))) Σ_i Σ_{j≠y_i} arccos(Ŵ_{y_i} · Ŵ_j), one sample at a time."""
    n_batch, n_cls = len(labels), weight.shape[0]
    total = 0.0
    for i in range(n_batch):
        y = int(labels[i])
        for j in range(n_cls):
            if j != y:
                total = total + torch.acos(unit(weight[y]) @ unit(weight[j]))
    return -total / (math.pi * n_batch * (n_cls - 1))


def ref_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard: per anchor the farthest positive and the nearest negative, by angle."""
    n = len(labels)
    losses = []
    for a in range(n):
        ang = [torch.acos(unit(emb[a]) @ unit(emb[b])) for b in range(n)]
        pos = [ang[b] for b in range(n) if b != a and labels[b] == labels[a]]
        neg = [ang[b] for b in range(n) if labels[b] != labels[a]]
        if pos and neg:
            hardest_pos = max(pos, key=lambda t: t.item())
            hardest_neg = min(neg, key=lambda t: t.item())
            losses.append(torch.clamp(hardest_pos + margin - hardest_neg, min=0.0))
    return sum(losses) / len(losses)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Max abs error within ``tol`` of the expected tensor's largest magnitude."""
    scale = expected.abs().max().item()
    err = (actual.double() - expected).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3e} > {tol:g} * {scale:.3e}"


def value_and_grads(fn, emb: torch.Tensor, weight: torch.Tensor):
    """(value, d/d emb, d/d weight) of ``fn(emb, weight)``; a missing gradient reads as zeros."""
    x = emb.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    out = fn(x, w)
    out.backward()
    gx = x.grad if x.grad is not None else torch.zeros_like(x)
    gw = w.grad if w.grad is not None else torch.zeros_like(w)
    return out.detach(), gx, gw


TERMS = {
    "intra": (
        lambda x, w: intra_loss(x, LABELS, w),
        lambda x, w: ref_intra(x, LABELS, w),
    ),
    "inter": (
        lambda x, w: inter_loss(LABELS, w) + 0.0 * x.sum(),
        lambda x, w: ref_inter(LABELS, w) + 0.0 * x.sum(),
    ),
    "triplet": (
        lambda x, w: triplet_loss(x, LABELS, 0.35) + 0.0 * w.sum(),
        lambda x, w: ref_triplet(x, LABELS, 0.35) + 0.0 * w.sum(),
    ),
}


# ---------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("term", sorted(TERMS))
def test_value_and_gradients_match_float64_reference(term: str) -> None:
    emb, weight = make_data()
    impl, ref = TERMS[term]
    value, g_emb, g_w = value_and_grads(impl, emb, weight)
    ref_value, ref_g_emb, ref_g_w = value_and_grads(ref, emb.double(), weight.double())

    assert value.dtype == torch.float32
    assert ref_value.abs() > 1e-3  # a non-trivial value is being compared
    torch.testing.assert_close(value.double(), ref_value, rtol=0, atol=1e-6)
    if term in ("intra", "triplet"):
        assert ref_g_emb.abs().max() > 0
        assert_close_scaled(g_emb, ref_g_emb)
    if term in ("intra", "inter"):
        assert ref_g_w.abs().max() > 0
        assert_close_scaled(g_w, ref_g_w)
    if term == "inter":  # every centre moves, including classes absent from the batch
        assert (ref_g_w.abs().sum(dim=1) > 0).all()
    assert torch.isfinite(g_emb).all() and torch.isfinite(g_w).all()


@pytest.mark.parametrize("term", sorted(TERMS))
def test_float64_gradcheck(term: str) -> None:
    emb, weight = make_data()
    impl, _ = TERMS[term]
    x = emb.double().requires_grad_(True)
    w = weight.double().requires_grad_(True)
    assert torch.autograd.gradcheck(impl, (x, w), eps=1e-6, atol=1e-6)


def test_intra_is_mean_angle_over_pi_in_2d() -> None:
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    emb = torch.tensor([[math.cos(0.3), math.sin(0.3)], [5.0, 0.0]])  # 0.3 rad and π/2 away
    value = intra_loss(emb, torch.tensor([0, 1]), weight)
    torch.testing.assert_close(value, torch.tensor((0.3 + math.pi / 2) / (2 * math.pi)))


# ---------------------------------------------------------------- inter


def rotated_centres(angle: float) -> torch.Tensor:
    """Three 2-D centres: e0, e0 rotated by ``angle``, and −e0."""
    return torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)], [-1.0, 0.0]])


def test_inter_decreases_when_two_centres_are_pushed_apart() -> None:
    labels = torch.tensor([0, 1, 1])
    values = [float(inter_loss(labels, rotated_centres(a))) for a in (0.2, 0.6, 1.0, 1.4)]
    assert values == sorted(values, reverse=True)
    assert values[0] - values[-1] > 1e-2

    # One gradient step on the centres opens the angle between centres 0 and 1.
    w = rotated_centres(0.2).requires_grad_(True)
    inter_loss(labels, w).backward()
    with torch.no_grad():
        stepped = w - 0.1 * w.grad
        before = torch.acos(torch.nn.functional.cosine_similarity(w[0], w[1], dim=0))
        after = torch.acos(torch.nn.functional.cosine_similarity(stepped[0], stepped[1], dim=0))
    assert after > before
    assert inter_loss(labels, stepped) < inter_loss(labels, w.detach())


def test_inter_weights_repeated_labels_like_separate_samples() -> None:
    _, weight = make_data()
    once = torch.tensor([0, 3])
    repeated = torch.tensor([0, 3, 3, 3])
    # −1/(πN(n−1)) Σ_i S(y_i): with S(0), S(3) from the two-label batch, N = 4 gives
    # (S(0) + 3·S(3)) / 4 where the N = 2 batch gives (S(0) + S(3)) / 2.
    s0 = inter_loss(torch.tensor([0]), weight)
    s3 = inter_loss(torch.tensor([3]), weight)
    torch.testing.assert_close(inter_loss(once, weight), (s0 + s3) / 2)
    torch.testing.assert_close(inter_loss(repeated, weight), (s0 + 3 * s3) / 4)


def test_inter_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="2 classes"):
        inter_loss(torch.tensor([0]), torch.ones(1, 4))


# ---------------------------------------------------------------- triplet


def on_circle(angles: list[float], radii: list[float]) -> torch.Tensor:
    return torch.tensor(
        [[r * math.cos(a), r * math.sin(a)] for a, r in zip(angles, radii, strict=True)]
    )


def test_triplet_hand_computed_2d() -> None:
    # anchor a (label 0) at 0 rad, positive p (label 0) at 0.2, negative n (label 1) at 0.4.
    # a: θ_ap = 0.2, θ_an = 0.4 -> 0.2 + 0.35 − 0.4 = 0.15
    # p: θ_pa = 0.2, θ_pn = 0.2 -> 0.2 + 0.35 − 0.2 = 0.35
    # n: no positive -> skipped.   Mean: (0.15 + 0.35) / 2 = 0.25.
    emb = on_circle([0.0, 0.2, 0.4], [1.0, 3.0, 0.5]).requires_grad_(True)
    value = triplet_loss(emb, torch.tensor([0, 0, 1]), margin=0.35)
    torch.testing.assert_close(value, torch.tensor(0.25), rtol=0, atol=1e-5)
    value.backward()
    assert torch.isfinite(emb.grad).all()
    # The angle terms only rotate the points: gradients are tangent to the circle.
    torch.testing.assert_close(
        (emb.grad * emb.detach()).sum(dim=1), torch.zeros(3), atol=1e-6, rtol=0
    )


def test_triplet_zero_when_positives_closer_by_more_than_margin() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    emb = on_circle([0.0, 0.1, 1.5, 1.6], [1.0, 2.0, 3.0, 1.0]).requires_grad_(True)
    value = triplet_loss(emb, labels, margin=0.35)
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))

    # Negatives moved in: nearest negative 0.3 − 0.1 = 0.2 < hardest positive 0.1 + margin.
    close = on_circle([0.0, 0.1, 0.3, 0.4], [1.0, 2.0, 3.0, 1.0])
    assert float(triplet_loss(close, labels, margin=0.35)) > 0.1
    # ... and with margin 0 but well separated, zero again.
    assert float(triplet_loss(on_circle([0.0, 0.1, 0.5, 0.6], [1, 1, 1, 1]), labels, 0.0)) == 0.0


def test_triplet_without_valid_anchor_is_connected_zero() -> None:
    for labels in (torch.tensor([0, 1, 2]), torch.tensor([4, 4, 4])):  # no positive / no negative
        emb = torch.randn(3, DIM, requires_grad=True)
        value = triplet_loss(emb, labels)
        assert value.item() == 0.0 and value.grad_fn is not None
        value.backward()
        assert torch.equal(emb.grad, torch.zeros_like(emb))


# ---------------------------------------------------------------- cos = 1 exactly


def test_gradients_finite_when_cosine_is_exactly_one() -> None:
    eye = torch.eye(NUM_CLASSES, DIM)
    weight = 0.5 * eye
    weight[3] = 2.0 * weight[0]  # two parallel centres: cos(W_0, W_3) = 1
    weight.requires_grad_(True)
    # Samples 0-2 point exactly along e0: on the centre of class 0 (intra cos = 1), sample 1 a
    # positive of sample 0 at angle 0, sample 2 (label 1) a negative at angle 0.
    emb = torch.stack([3.0 * eye[0], 3.0 * eye[0], 7.0 * eye[0], 2.0 * eye[1]]).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1])
    for name, fn in {
        "intra": lambda: intra_loss(emb[:2], labels[:2], weight),
        "inter": lambda: inter_loss(torch.tensor([0, 3, 1]), weight),
        "triplet": lambda: triplet_loss(emb, labels),
    }.items():
        emb.grad = None
        weight.grad = None
        value = fn()
        value.backward()
        assert torch.isfinite(value), name
        grads = [g for g in (emb.grad, weight.grad) if g is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() for g in grads), name
    # On its centre the intra angle is ~0 (arccos(1 − 1e-7) ≈ 5e-4 rad).
    assert intra_loss(emb[:2], labels[:2], weight).item() < 1e-3


def test_terms_compute_in_float32_under_autocast() -> None:
    emb, weight = make_data()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        values = [
            intra_loss(emb.bfloat16(), LABELS, weight),
            inter_loss(LABELS, weight.bfloat16()),
            triplet_loss(emb.bfloat16(), LABELS),
        ]
    assert all(v.dtype == torch.float32 for v in values)
    torch.testing.assert_close(values[0], intra_loss(emb, LABELS, weight), rtol=0, atol=1e-2)


# ---------------------------------------------------------------- extra_loss


def margin_head(kind: str = "arcface") -> MarginHead:
    _, weight = make_data()
    head = build_head(kind, DIM, NUM_CLASSES)
    assert isinstance(head, MarginHead)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def test_extra_loss_sums_selected_terms() -> None:
    emb, _ = make_data()
    head = margin_head("norm_softmax")
    parts = {
        "intra": intra_loss(emb, LABELS, head.weight),
        "inter": inter_loss(LABELS, head.weight),
        "triplet": triplet_loss(emb, LABELS, 0.35),
    }
    for terms in (["intra"], ["inter"], ["intra", "inter"], ["triplet"], ["Intra", " inter "]):
        expected = sum(parts[t.strip().lower()] for t in terms)
        torch.testing.assert_close(extra_loss(terms, emb, LABELS, head), expected)
    torch.testing.assert_close(
        extra_loss(["triplet"], emb, LABELS, head, triplet_margin=0.1),
        triplet_loss(emb, LABELS, 0.1),
    )
    # Triplet needs no class centres: fine with plain softmax or no head at all.
    torch.testing.assert_close(
        extra_loss(["triplet"], emb, LABELS, SoftmaxHead(DIM, NUM_CLASSES)), parts["triplet"]
    )
    torch.testing.assert_close(extra_loss(("triplet",), emb, LABELS, None), parts["triplet"])
    # No terms: a zero connected to the embeddings.
    x = emb.clone().requires_grad_(True)
    empty = extra_loss([], x, LABELS, head)
    assert empty.item() == 0.0 and empty.grad_fn is not None
    # Gradients reach the head's centres.
    head.zero_grad()
    extra_loss(["intra", "inter"], x, LABELS, head).backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("term", ["intra", "inter"])
def test_extra_loss_rejects_heads_without_centres(term: str) -> None:
    emb, _ = make_data()
    with pytest.raises(ValueError, match="softmax"):
        extra_loss([term], emb, LABELS, SoftmaxHead(DIM, NUM_CLASSES))
    with pytest.raises(ValueError, match="class centres"):
        extra_loss([term, "triplet"], emb, LABELS, None)


def test_extra_loss_rejects_unknown_or_repeated_terms() -> None:
    emb, _ = make_data()
    head = margin_head()
    with pytest.raises(ValueError, match="unknown loss term"):
        extra_loss(["intra", "center"], emb, LABELS, head)
    with pytest.raises(ValueError, match="repeated"):
        extra_loss(["intra", "intra"], emb, LABELS, head)
    with pytest.raises(ValueError, match="sequence"):
        extra_loss("intra", emb, LABELS, head)  # type: ignore[arg-type]


# ---------------------------------------------------------------- IdentityBatchSampler

# 10 identities (ids 100..109, not contiguous with indices); 103 and 107 have fewer than K images.
SIZES = {100: 5, 101: 7, 102: 4, 103: 2, 104: 9, 105: 4, 106: 6, 107: 1, 108: 8, 109: 4}
P, K = 4, 4


def sampler_labels() -> list[int]:
    g = torch.Generator().manual_seed(0)
    labels = [ident for ident, n in SIZES.items() for _ in range(n)]
    return [labels[i] for i in torch.randperm(len(labels), generator=g).tolist()]


def batches(sampler: IdentityBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_yields_p_identities_times_k_images() -> None:
    labels = sampler_labels()
    sampler = IdentityBatchSampler(labels, P, K, seed=1)
    assert len(sampler) == len(labels) // (P * K) == 3
    out = batches(sampler, 0)
    assert len(out) == len(sampler)
    for batch in out:
        assert len(batch) == P * K
        ids = [labels[i] for i in batch]
        assert sorted(Counter(ids).values()) == [K] * P
        # grouped: K consecutive indices per identity
        assert all(len(set(ids[b * K : (b + 1) * K])) == 1 for b in range(P))
    # 10 identities // P = 2 batches per pass: the first two batches share no identity.
    first, second = ({labels[i] for i in b} for b in out[:2])
    assert not first & second


def test_sampler_small_identities_sample_with_replacement() -> None:
    labels = sampler_labels()
    sampler = IdentityBatchSampler(labels, P, K, seed=3, batches_per_epoch=40)
    seen_small = set()
    for batch in batches(sampler, 0):
        for b in range(P):
            group = batch[b * K : (b + 1) * K]
            ident = labels[group[0]]
            assert all(labels[i] == ident for i in group)
            if SIZES[ident] >= K:
                assert len(set(group)) == K  # without replacement
            else:
                seen_small.add(ident)
                assert len(set(group)) <= SIZES[ident]
    assert seen_small == {103, 107}


def test_sampler_deterministic_per_seed_and_epoch() -> None:
    labels = sampler_labels()
    a = IdentityBatchSampler(labels, P, K, seed=7, batches_per_epoch=6)
    b = IdentityBatchSampler(labels, P, K, seed=7, batches_per_epoch=6)
    assert batches(a, 2) == batches(b, 2)
    assert batches(a, 2) == batches(a, 2)  # re-iterating repeats the epoch
    assert batches(a, 2) != batches(a, 3)
    assert batches(a, 0) != batches(
        IdentityBatchSampler(labels, P, K, seed=8, batches_per_epoch=6), 0
    )
    # Every index is a valid dataset index.
    assert all(0 <= i < len(labels) for batch in batches(a, 5) for i in batch)


def test_sampler_with_dataloader_and_errors() -> None:
    labels = sampler_labels()
    dataset = TensorDataset(torch.tensor(labels))
    sampler = IdentityBatchSampler(labels, P, K, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    assert len(loader) == len(sampler)
    for (batch_labels,) in loader:
        assert batch_labels.shape == (P * K,)
        assert len(set(batch_labels.tolist())) == P
    with pytest.raises(ValueError, match="identities"):
        IdentityBatchSampler(labels, 11, K)
    with pytest.raises(ValueError, match="positive"):
        IdentityBatchSampler(labels, P, 0)
    with pytest.raises(ValueError, match="no complete batch"):
        IdentityBatchSampler(labels[:10], 2, 8)
