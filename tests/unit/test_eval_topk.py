"""Streaming top-k and k-th largest: exact against np.sort, ties, -0.0 and -inf included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arcflow.evaluate.topk import (
    KthLargest,
    TopK,
    float_keys,
    impostors_above,
    key_value,
    low_far_roc,
)
from tests.unit import eval_fixtures
from tests.unit.eval_fixtures import DEVICES

pytestmark = pytest.mark.unit

one_thread = eval_fixtures.one_thread
device = eval_fixtures.device


def _kth(chunks: list[np.ndarray], k: int, max_buffer: int, device: str = "cpu") -> KthLargest:
    sel = KthLargest(k, max_buffer=max_buffer, device=device)
    while not sel.done:
        for c in chunks:
            sel.update(torch.from_numpy(c).to(device))
        sel.end_pass()
    return sel


def _scores(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Random float32 scores with many ties (rounded), all equal, or -0.0 / -inf mixed in."""
    x = np.round(rng.standard_normal(n), 2).astype(np.float32)
    if kind == "equal":
        x[:] = 0.25
    elif kind == "zeros":
        x[rng.random(n) < 0.4] = -0.0
        x[rng.random(n) < 0.2] = 0.0
    elif kind == "inf":
        x[rng.random(n) < 0.3] = -np.inf
    return x


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("kind", ["ties", "equal", "zeros", "inf"])
@pytest.mark.parametrize("seed", range(4))
def test_kth_largest_and_top_k_equal_np_sort(kind: str, seed: int, device: str) -> None:
    rng = np.random.default_rng(seed)
    x = _scores(rng, int(rng.integers(1, 5000)), kind)
    chunks = np.array_split(x, int(rng.integers(1, 12)))
    desc = np.sort(x)[::-1]
    for k in {1, 2, int(rng.integers(1, x.size + 1)), x.size, x.size + 3}:
        expected = desc[k - 1] if k <= x.size else -math.inf
        for max_buffer in (0, 7, 1 << 20):  # two passes, overflowing buffer, one pass
            sel = _kth(chunks, k, max_buffer, device)
            assert sel.value == expected
            if max_buffer != 7:
                assert sel.passes == (2 if max_buffer == 0 and k <= x.size else 1)
        top = TopK(k, device=device)
        for c in chunks:
            top.update(torch.from_numpy(c).to(device))
        assert np.array_equal(top.values().cpu().numpy(), desc[:k])
        assert top.kth() == expected
        assert top.seen == x.size


def test_two_passes_when_the_candidates_do_not_fit() -> None:
    x = np.arange(1000, dtype=np.float32)
    chunks = np.array_split(x, 10)
    assert _kth(chunks, 500, max_buffer=0).passes == 2
    assert _kth(chunks, 500, max_buffer=0).value == 500.0
    assert _kth(chunks, 500, max_buffer=1000).passes == 1
    assert _kth(chunks, 500, max_buffer=1000).value == 500.0


def test_values_in_one_fine_bin_need_the_low_bits() -> None:
    """Distinct values that share their top 16 bits are told apart by the second histogram."""
    base = np.float32(0.3)
    x = np.nextafter(base, np.float32(1), dtype=np.float32) * np.ones(5, np.float32)
    x = np.concatenate([x, [base] * 3, [np.float32(0.30001)]]).astype(np.float32)
    assert len({int(k) >> 16 for k in float_keys(torch.from_numpy(x))}) == 1
    desc = np.sort(x)[::-1]
    for k in range(1, x.size + 1):
        assert _kth([x[:4], x[4:]], k, max_buffer=0).value == desc[k - 1]


def test_a_second_pass_over_other_scores_is_an_error() -> None:
    sel = KthLargest(2, max_buffer=0)
    sel.update(torch.tensor([1.0, 2.0, 3.0]))
    sel.end_pass()
    sel.update(torch.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="pass 2 saw 2 values, pass 1 3"):
        sel.end_pass()


def test_float_keys_are_order_preserving_and_invertible() -> None:
    x = torch.tensor([-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-38, 0.5, 3.0, np.inf])
    keys = float_keys(x)
    steps = (keys[1:] - keys[:-1]).tolist()
    assert steps[3] == 0  # -0.0 and +0.0 are one value
    assert all(step > 0 for i, step in enumerate(steps) if i != 3)
    assert [key_value(int(k)) for k in keys] == x.tolist()  # -0.0 comes back as 0.0 == -0.0


def test_top_k_of_fewer_values_than_k() -> None:
    top = TopK(5)
    top.update(torch.tensor([0.5, 0.1]))
    assert top.values().tolist() == pytest.approx([0.5, 0.1])
    assert top.kth() == -math.inf and top.kth(2) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        top.kth(6)


@pytest.mark.parametrize(
    ("rate", "n", "m"),
    [(1e-6, 3_530_000_000, 3530), (0.29, 100, 29), (1e-9, 999_999_999, 0), (1.0, 7, 7)],
)
def test_impostors_above_is_exact_decimal(rate: float, n: int, m: int) -> None:
    assert impostors_above(rate, n) == m  # 0.29 * 100 is 28.999999999999996 in floats


def test_low_far_roc_by_hand() -> None:
    genuine = np.array([0.9, 0.7, 0.4, 0.1])
    top = np.array([0.8, 0.5, 0.5])  # the 3 highest of 10 impostors; more 0.5s may follow
    fpr, tpr = low_far_roc(genuine, top, 10)
    # thresholds 0.9, 0.8, 0.7 (0.5 and below: not exact)
    assert fpr.tolist() == pytest.approx([0, 0, 0.1, 0.1])
    assert tpr.tolist() == pytest.approx([0, 0.25, 0.25, 0.5])
    fpr, tpr = low_far_roc(genuine, top, 3, complete=True)
    assert fpr.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1, 1, 1])
    assert tpr.tolist() == pytest.approx([0, 0.25, 0.25, 0.5, 0.5, 0.75, 1])


def test_low_far_roc_thins_to_exact_points() -> None:
    rng = np.random.default_rng(0)
    imp = rng.standard_normal(100_000)
    gen = rng.standard_normal(1000) + 3
    fpr, tpr = low_far_roc(gen, imp, imp.size, complete=True, max_points=200)
    assert fpr.size <= 202 and np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    desc = np.append(np.sort(imp)[::-1], -np.inf)
    for f, t in zip(fpr[1:], tpr[1:], strict=True):  # after (0, 0): the corner at each FPR
        below = desc[round(f * imp.size)]  # the highest impostor score that is not accepted
        assert t == np.mean(gen > below)


def test_top_k_skips_rows_by_their_maxima() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((40, 30)), 1).astype(np.float32)
    gated, plain = TopK(25), TopK(25)
    for rows in np.array_split(x, 8, axis=1):  # column chunks, as the scans feed them
        chunk = torch.from_numpy(np.ascontiguousarray(rows))
        gated.update(chunk, chunk.amax(dim=1))
        plain.update(chunk)
    assert np.array_equal(gated.values().numpy(), np.sort(x.ravel())[::-1][:25])
    assert np.array_equal(gated.values().numpy(), plain.values().numpy())
    assert gated.seen == x.size


def test_selectors_copy_what_they_keep() -> None:
    """The scans reuse one score buffer for every chunk: nothing kept may alias it."""
    chunks = np.array([[5, 4, 3, 2, 1, 0], [0.5] * 6, [6, -1, -2, 7, -3, -4]], np.float32)
    buf = torch.empty(6)
    top, sel = TopK(8), KthLargest(8)
    for chunk in chunks:
        buf.copy_(torch.from_numpy(chunk))
        top.update(buf)
        sel.update(buf)
    buf.fill_(-100)
    sel.end_pass()
    desc = np.sort(chunks.ravel())[::-1]
    assert top.values().tolist() == desc[:8].tolist()
    assert sel.value == desc[7]
