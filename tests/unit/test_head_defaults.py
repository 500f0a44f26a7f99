"""Every margin head's defaults are the paper's (issue #18), margin-less margin heads are
refused, SphereFace's λ blend always applies, and the two rules past θ* (the linear extension
and SphereFace's ψ) behave as documented in ``arcflow/heads/margins.py``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from arcflow.config import TrainParams, load_params
from arcflow.errors import ConfigError
from arcflow.heads import MarginHead, build_head, head_margins, margin_target
from arcflow.heads.margins import (
    CM2,
    EXTENSION_MAX_DELTA,
    EXTENSION_MAX_M1,
    PAPER_MARGINS,
    extension_is_monotonic,
)

pytestmark = pytest.mark.unit

S = 64.0
DIM = 3
# cos θ of the target class for three samples: 0.5 (θ = 60°), 0.2 (78°) and −0.9 (154°, past
# SphereFace-1.35's θ* = 133°: the extension region).
COSINES = (0.5, 0.2, -0.9)


def head_at_cosines(kind: str, **kwargs) -> tuple[MarginHead, torch.Tensor, torch.Tensor]:
    """A 2-class head of ``kind``; sample ``i`` has ``cos θ = COSINES[i]`` to class 0."""
    head = build_head(kind, DIM, 2, s=S, **kwargs)
    assert isinstance(head, MarginHead)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    emb = torch.tensor(
        [[c, math.sqrt(1.0 - c * c), 0.0] for c in COSINES], dtype=torch.float32
    )  # orthogonal to class 1: its logit is 0
    return head, emb, torch.zeros(len(COSINES), dtype=torch.long)


def target_logits(kind: str, **kwargs) -> list[float]:
    head, emb, labels = head_at_cosines(kind, **kwargs)
    with torch.no_grad():
        logits = head(emb, labels)
    assert torch.allclose(logits[:, 1], torch.zeros(len(COSINES)), atol=1e-5)
    return logits[:, 0].tolist()


def by_hand(c: float, m1: float, m2: float, m3: float) -> float:
    """s·(cos(m1·θ + m2) − m3), or the linear extension s·(cos θ − Δ·sin Δ − m3) past θ*."""
    theta, star = math.acos(c), (math.pi - m2) / m1
    if theta <= star:
        return S * (math.cos(m1 * theta + m2) - m3)
    delta = math.pi - star
    return S * (c - delta * math.sin(delta) - m3)


# ------------------------------------------------------------------------ paper defaults
def test_paper_table_values() -> None:
    assert PAPER_MARGINS == {
        "norm_softmax": (1.0, 0.0, 0.0),
        "sphereface": (1.35, 0.0, 0.0),
        "cosface": (1.0, 0.0, 0.35),
        "arcface": (1.0, 0.5, 0.0),
        "combined": (1.0, 0.3, 0.2),
    }
    assert CM2 == (0.9, 0.4, 0.15)


def test_arcface_default_is_m2_half() -> None:
    got = target_logits("arcface")
    assert got[0] == pytest.approx(S * math.cos(math.acos(0.5) + 0.5), abs=1e-4)
    assert got[1] == pytest.approx(S * math.cos(math.acos(0.2) + 0.5), abs=1e-4)
    # 154° > π − 0.5: insightface's fallback cos θ − m·sin m
    assert got[2] == pytest.approx(S * (-0.9 - 0.5 * math.sin(0.5)), abs=1e-4)


def test_cosface_default_is_m3_0_35() -> None:
    got = target_logits("cosface")
    assert got == pytest.approx([S * (c - 0.35) for c in COSINES], abs=1e-4)


def test_sphereface_default_is_m1_1_35_with_the_extension_past_theta_star() -> None:
    got = target_logits("sphereface")
    assert got[0] == pytest.approx(S * math.cos(1.35 * math.acos(0.5)), abs=1e-4)
    assert got[1] == pytest.approx(S * math.cos(1.35 * math.acos(0.2)), abs=1e-4)
    delta = math.pi - math.pi / 1.35  # extension region: θ = 154° > θ* = 133.3°
    assert math.acos(-0.9) > math.pi / 1.35
    assert got[2] == pytest.approx(S * (-0.9 - delta * math.sin(delta)), abs=1e-4)


def test_sphereface_original_psi_past_theta_star() -> None:
    got = target_logits("sphereface", sphereface_psi="original")
    # k = 1 on [π/1.35, 2π/1.35]: ψ = −cos(1.35·θ) − 2
    assert got[2] == pytest.approx(S * (-math.cos(1.35 * math.acos(-0.9)) - 2.0), abs=1e-4)
    assert got[0] == pytest.approx(S * math.cos(1.35 * math.acos(0.5)), abs=1e-4)


def test_combined_default_is_cm1() -> None:
    got = target_logits("combined")
    assert got == pytest.approx([by_hand(c, 1.0, 0.3, 0.2) for c in COSINES], abs=1e-4)
    assert got[0] == pytest.approx(S * (math.cos(math.acos(0.5) + 0.3) - 0.2), abs=1e-4)


def test_combined_cm2() -> None:
    m1, m2, m3 = CM2
    got = target_logits("combined", m1=m1, m2=m2, m3=m3)
    assert got == pytest.approx([by_hand(c, m1, m2, m3) for c in COSINES], abs=1e-4)
    assert got[0] == pytest.approx(S * (math.cos(0.9 * math.acos(0.5) + 0.4) - 0.15), abs=1e-4)


def test_combined_keys_left_null_take_cm1_values() -> None:
    assert head_margins("combined", m2=0.5) == (1.0, 0.5, 0.2)
    assert head_margins("combined", m1=0.9, m2=0.4, m3=0.15) == CM2


def test_norm_softmax_has_no_margin_whatever_is_given() -> None:
    assert head_margins("norm_softmax", m=0.5, m1=2.0, m2=0.3, m3=0.2) == (1.0, 0.0, 0.0)
    assert target_logits("norm_softmax") == pytest.approx([S * c for c in COSINES], abs=1e-4)


def test_train_params_defaults_give_the_paper_margins() -> None:
    for kind, margins in PAPER_MARGINS.items():
        cfg = TrainParams(head=kind)
        assert head_margins(cfg.head, m=cfg.m, m1=cfg.m1, m2=cfg.m2, m3=cfg.m3) == margins
    assert TrainParams().sphereface_psi == "extension"


def test_explicit_margins_override_the_paper() -> None:
    assert head_margins("arcface", m=0.4) == (1.0, 0.4, 0.0)
    assert head_margins("cosface", m=0.5) == (1.0, 0.0, 0.5)
    assert head_margins("sphereface", m1=2.0) == (2.0, 0.0, 0.0)


# ---------------------------------------------------------------- margin-less: refused
@pytest.mark.parametrize(
    ("train", "keys"),
    [
        ({"head": "arcface", "m": 0.0}, ["m > 0", "0.5"]),
        ({"head": "cosface", "m": 0.0}, ["m > 0", "0.35"]),
        ({"head": "sphereface", "m1": 1.0}, ["m1 > 1", "1.35"]),
        ({"head": "sphereface", "m1": 0.8}, ["m1 > 1"]),
        ({"head": "combined", "m1": 1.0, "m2": 0.0, "m3": 0.0}, ["m1, m2, m3", "CM1"]),
        ({"head": "combined", "m2": 0.0, "m3": 0.0}, ["m1, m2, m3"]),  # CM1's m1 is 1
    ],
)
def test_margin_head_without_a_margin_is_a_config_error(
    repo_root: Path, tmp_path: Path, train: dict, keys: list[str]
) -> None:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["train"].update(train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        load_params(path, ("train",))
    message = str(err.value)
    assert "no margin" in message and f"head {train['head']}" in message, message
    for key in keys:
        assert key in message, message
    with pytest.raises(ValidationError, match="no margin"):
        TrainParams(**train)


def test_shipped_params_switching_to_sphereface_names_m1(repo_root: Path, tmp_path: Path):
    """params.yaml sets m1: 1.0 explicitly: ``-S train.head=sphereface`` alone asks for m1."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["train"]["head"] = "sphereface"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"train: .*sphereface has no margin with m1 = 1"):
        load_params(path, ("train",))
    params["train"]["m1"] = None
    path.write_text(yaml.safe_dump(params))
    cfg = load_params(path, ("train",)).train
    assert head_margins(cfg.head, m=cfg.m, m1=cfg.m1, m2=cfg.m2, m3=cfg.m3)[0] == 1.35


def test_build_head_refuses_margin_less_margin_heads() -> None:
    with pytest.raises(ValueError, match="no margin with m = 0"):
        build_head("arcface", DIM, 2, m=0.0)
    with pytest.raises(ValueError, match="no margin"):
        build_head("combined", DIM, 2, m1=1.0, m2=0.0, m3=0.0)


def test_sphereface_refuses_partial_fc() -> None:
    with pytest.raises(ValidationError, match="sphereface cannot use partial_fc"):
        TrainParams(head="sphereface", partial_fc=True)


# ------------------------------------------------------------------------ λ annealing
def test_sphereface_lambda_blend_is_applied() -> None:
    head, emb, labels = head_at_cosines("sphereface")
    with torch.no_grad():
        plain = head(emb, labels)[:, 0]
        head.blend = 5.0
        blended = head(emb, labels)[:, 0]
    cos = torch.tensor(COSINES)
    torch.testing.assert_close(blended, (5.0 * S * cos + plain) / 6.0, rtol=0, atol=1e-4)
    assert (blended - plain).abs().min() > 1e-2  # the blend changed every target


def test_blend_applies_with_no_margin_and_with_straight_through() -> None:
    """No early return skips λ: with no margin the blend of cos with cos is cos; with the
    straight-through margin the blend still mixes the target."""
    head = MarginHead(DIM, 2, s=S)  # margin-less
    head.blend = 3.0
    _, emb, labels = head_at_cosines("sphereface")
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        torch.testing.assert_close(head(emb, labels)[:, 0], S * torch.tensor(COSINES))
    st, emb, labels = head_at_cosines("sphereface", straight_through=True)
    st.blend = 3.0
    with torch.no_grad():
        got = st(emb, labels)[:, 0]
        st.blend = 0.0
        plain = st(emb, labels)[:, 0]
    torch.testing.assert_close(got, (3.0 * S * torch.tensor(COSINES) + plain) / 4.0)


def test_sphereface_blend_gradient_flows_through_the_margin() -> None:
    head, emb, labels = head_at_cosines("sphereface")
    head.blend = 5.0
    x = emb.clone().requires_grad_(True)
    head.loss(x, labels).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------ ψ and the extension
def psi_by_hand(theta: float, m1: float) -> float:
    k = math.floor(m1 * theta / math.pi)
    return (-1) ** k * math.cos(m1 * theta) - 2 * k


@pytest.mark.parametrize("m1", [1.35, 2.0, 4.0])
def test_original_psi_matches_the_formula_and_decreases(m1: float) -> None:
    thetas = [0.0, 0.3, 1.0, 1.6, 2.0, 2.4, 2.9, 3.1]
    cos = torch.tensor([math.cos(t) for t in thetas], dtype=torch.float64)
    expected = torch.tensor([psi_by_hand(t, m1) for t in thetas], dtype=torch.float64)
    got = margin_target(cos, m1, psi="original", eps=1e-12)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)
    # The default eps clamps cos θ to 1 − 1e-7 (finite acos gradient): θ >= 4.5e-4 rad.
    torch.testing.assert_close(margin_target(cos, m1, psi="original"), expected, atol=1e-5, rtol=0)

    grid = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)
    values = margin_target(torch.cos(grid), m1, psi="original", eps=1e-12)
    assert (values.diff() < 0).all(), m1  # strictly decreasing on [0, π]
    assert values.diff().abs().max() < 1e-2  # continuous: no jumps at kπ/m1
    # With the default eps: flat only within the clamp at the ends, never increasing.
    assert (margin_target(torch.cos(grid), m1, psi="original").diff() <= 0).all()


def test_original_psi_with_m2_and_m3_decreases() -> None:
    grid = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)
    for m1, m2, m3 in [(1.0, 0.5, 0.0), (0.9, 0.4, 0.15), (2.5, 0.3, 0.2)]:
        values = margin_target(torch.cos(grid), m1, m2, m3, psi="original", eps=1e-12)
        assert (values.diff() < 0).all(), (m1, m2, m3)


def test_extension_monotonic_threshold_is_computed_not_assumed() -> None:
    """The extension jumps at θ* from −1 to −cos Δ − Δ·sin Δ (Δ = π − θ*): monotonic iff
    cos Δ + Δ·sin Δ >= 1. Recompute the root by bisection, then check on a dense θ grid that
    the target of ``margin_target`` stops being monotonic right there (m1 ≈ 3.876 for m2 = 0;
    not 3.74)."""
    lo, hi = math.pi / 2, math.pi  # h(Δ) = cos Δ + Δ sin Δ − 1: > 0 at π/2, < 0 at π
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.cos(mid) + mid * math.sin(mid) - 1 > 0 else (lo, mid)
    assert lo == pytest.approx(EXTENSION_MAX_DELTA, abs=1e-12)
    assert math.pi / (math.pi - lo) == pytest.approx(EXTENSION_MAX_M1, abs=1e-9)
    assert abs(EXTENSION_MAX_M1 - 3.8763) < 1e-4

    grid = torch.linspace(0.0, math.pi, 400001, dtype=torch.float64)
    cos = torch.cos(grid)

    def monotonic(m1: float, m2: float = 0.0) -> bool:
        return bool((margin_target(cos, m1, m2).diff() <= 1e-12).all())

    for m1 in (1.35, 2.0, 3.0, 3.74, 3.8, EXTENSION_MAX_M1 - 1e-3):
        assert monotonic(m1) and extension_is_monotonic(m1, 0.0), m1
    for m1 in (EXTENSION_MAX_M1 + 1e-3, 3.9, 4.0, 6.0):
        assert not monotonic(m1) and not extension_is_monotonic(m1, 0.0), m1
    # With m2 > 0 the bound is on θ* = (π − m2)/m1 >= π − Δ_max.
    for m1, m2 in [(3.0, 0.5), (3.5, 0.3), (3.6, 0.3), (1.0, 0.5), (0.9, 0.4)]:
        assert monotonic(m1, m2) == extension_is_monotonic(m1, m2), (m1, m2)
    assert not extension_is_monotonic(3.6, 0.3)


def test_non_monotonic_extension_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="sphereface_psi: original"):
        TrainParams(head="sphereface", m1=4.0)
    cfg = TrainParams(head="sphereface", m1=4.0, sphereface_psi="original")
    head = build_head("sphereface", DIM, 2, m1=cfg.m1, sphereface_psi=cfg.sphereface_psi)
    assert isinstance(head, MarginHead) and head.psi == "original"
    with pytest.raises(ValidationError, match="not monotonic"):
        TrainParams(head="combined", m1=3.6, m2=0.3)


def test_psi_applies_to_sphereface_only() -> None:
    head = build_head("arcface", DIM, 2, sphereface_psi="original")
    assert isinstance(head, MarginHead) and head.psi == "extension"
    with pytest.raises(ValueError, match="psi"):
        margin_target(torch.zeros(1), 1.35, psi="nope")


def test_trainer_builds_the_paper_heads_from_default_params() -> None:
    from arcflow.train.loop import make_head

    for kind, margins in PAPER_MARGINS.items():
        head = make_head(TrainParams(head=kind), 10)
        assert isinstance(head, MarginHead)
        assert (head.m1, head.m2, head.m3) == margins, kind
    sphere = make_head(TrainParams(head="sphereface", m1=4.0, sphereface_psi="original"), 10)
    assert isinstance(sphere, MarginHead) and (sphere.m1, sphere.psi) == (4.0, "original")
