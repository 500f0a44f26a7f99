"""Verification metrics: folds, accuracy, VAL@FAR and ROC against hand-worked answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arcflow.evaluate.verification import (
    ACC_THRESHOLDS,
    VAL_THRESHOLDS,
    accuracy,
    auc,
    best_threshold_accuracy,
    evaluate_pairs,
    far_curve,
    kfold_accuracy,
    kfold_splits,
    kfold_val_far,
    pair_distances,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    val_far,
)

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- helpers


def _embed_distances(dists: list[float]) -> np.ndarray:
    """2-D embeddings whose pair i has squared distance dists[i] exactly (sqrt is exact)."""
    emb = np.zeros((2 * len(dists), 2))
    emb[1::2, 0] = np.sqrt(dists)
    assert np.array_equal(pair_distances(emb), np.asarray(dists))
    return emb


def _random_pairs(seed: int, n: int, dim: int, noise: float | None) -> tuple[np.ndarray, ...]:
    """Unit embeddings; same pairs are noisy copies (noise=None: no relation at all)."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    a = rng.standard_normal((n, dim))
    other = rng.standard_normal((n, dim))
    b = other if noise is None else np.where(issame[:, None], a + noise * other, other)
    emb = np.empty((2 * n, dim))
    emb[0::2], emb[1::2] = a, b
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), issame


# ------------------------------------------------------------------------------- folds


@pytest.mark.parametrize(
    ("n", "bounds"),
    [
        # 6000 // 10 = 600, no remainder
        (6000, [0, 600, 1200, 1800, 2400, 3000, 3600, 4200, 4800, 5400, 6000]),
        # 6003 // 10 = 600, remainder 3 -> sizes 601, 601, 601, then 600 x 7
        (6003, [0, 601, 1202, 1803, 2403, 3003, 3603, 4203, 4803, 5403, 6003]),
        # 25 // 10 = 2, remainder 5 -> sizes 3 x 5, then 2 x 5
        (25, [0, 3, 6, 9, 12, 15, 17, 19, 21, 23, 25]),
    ],
)
def test_kfold_splits_follow_sklearn_sizing(n: int, bounds: list[int]) -> None:
    folds = kfold_splits(n, 10)
    assert len(folds) == 10
    for k, (train, test) in enumerate(folds):
        assert test.tolist() == list(range(bounds[k], bounds[k + 1]))
        assert train.tolist() == list(range(bounds[k])) + list(range(bounds[k + 1], n))


def test_single_fold_trains_and_tests_on_everything() -> None:
    ((train, test),) = kfold_splits(5, 1)
    assert train.tolist() == test.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "k"), [(9, 10), (5, 0), (5, -1), (5, True), (5, 2.0)])
def test_kfold_splits_rejects_bad_arguments(n: int, k: object) -> None:
    with pytest.raises(ValueError):
        kfold_splits(n, k)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- distances


def test_pair_distances_are_squared_l2_of_consecutive_rows() -> None:
    emb = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.6, 0.8]], dtype=np.float32)
    dist = pair_distances(emb)
    assert dist.dtype == np.float32
    np.testing.assert_allclose(dist, [2.0, 0.0])


# ---------------------------------------------------------------------------- accuracy


def test_best_threshold_is_strict_and_takes_the_first_tie() -> None:
    # same: 0.25, 0.5, 1.0    diff: 1.0, 1.5, 2.25    (predict same iff d < t)
    #   t <= 0.25       TP 0  TN 3  -> 3/6
    #   0.25 < t <= 0.5 TP 1  TN 3  -> 4/6   (t = 0.50 does NOT accept d = 0.5)
    #   0.5 < t <= 1.0  TP 2  TN 3  -> 5/6   <- first best, first grid point 0.51
    #   1.0 < t <= 1.5  TP 3  TN 2  -> 5/6   (tie, must not win)
    #   1.5 < t <= 2.25 TP 3  TN 1  -> 4/6
    assert ACC_THRESHOLDS[50] == 0.5
    dist = np.array([0.25, 0.5, 1.0, 1.0, 1.5, 2.25])
    issame = np.array([True, True, True, False, False, False])
    threshold, acc = best_threshold_accuracy(dist, issame)
    assert threshold == ACC_THRESHOLDS[51] == pytest.approx(0.51)
    assert acc == pytest.approx(5 / 6)


def test_held_out_predictions_are_strict() -> None:
    # a genuine pair exactly at the threshold is rejected: only the impostor is right
    assert accuracy(np.array([0.5, 0.7]), np.array([True, False]), 0.5) == 0.5
    assert accuracy(np.array([0.5, 0.7]), np.array([True, False]), 0.51) == 1.0
    dist, issame = np.array([0.5, 0.2, 0.5, 0.9]), np.array([True, True, False, False])
    assert val_far(dist, issame, 0.5) == (0.5, 0.0)
    assert val_far(dist, issame, 0.51) == (1.0, 0.5)
    assert val_far(dist[:2], issame[:2], 0.51) == (1.0, 0.0)  # no impostors: FAR 0
    assert val_far(dist[2:], issame[2:], 0.51) == (0.0, 0.5)  # no genuines: VAL 0


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """20 pairs, 10 folds of 2: fold k = (same pair 2k, different pair 2k+1).

    same distances 0.25 except fold 0 (1.0); different distances 2.25 except fold 9 (0.5625).
    """
    same = [1.0] + [0.25] * 9
    diff = [2.25] * 9 + [0.5625]
    dists = [d for pair in zip(same, diff, strict=True) for d in pair]
    return _embed_distances(dists), np.array([True, False] * 10)


def test_hand_case_accuracy_per_fold() -> None:
    # Accuracy grid 0.01. Training folds hold 18 pairs.
    # fold 0: train same 0.25x9, diff 2.25x8 + 0.5625. t in (0.25, 0.5625] gets 18/18
    #         -> best 0.26; test (same 1.0, diff 2.25) at 0.26: FN + TN -> 0.5
    # fold 1..8: train same 1.0 + 0.25x8, diff 2.25x8 + 0.5625.
    #         (0.25, 0.5625]: 8 + 9 = 17; (0.5625, 1.0]: 8 + 8 = 16; (1.0, 2.25]: 9 + 8 = 17
    #         tie of two disjoint ranges -> first: 0.26; test (0.25, 2.25) -> 1.0
    # fold 9: train same 1.0 + 0.25x8, diff 2.25x9. (0.25, 1.0]: 17; (1.0, 2.25]: 18
    #         strict <: t = 1.00 rejects the 1.0 pair -> best 1.01;
    #         test (same 0.25, diff 0.5625) at 1.01: TP + FP -> 0.5
    # mean = (0.5 + 8 * 1 + 0.5) / 10 = 0.9; std = sqrt((2 * 0.16 + 8 * 0.01) / 10) = 0.2
    emb, issame = _hand_case()
    folds = kfold_splits(20, 10)
    accs, best = kfold_accuracy(pair_distances(emb), issame, folds)
    assert accs.tolist() == [0.5] + [1.0] * 8 + [0.5]
    assert np.array_equal(best, ACC_THRESHOLDS[[26] * 9 + [101]])
    result = evaluate_pairs(emb, issame)
    assert result.accuracy == pytest.approx(0.9)
    assert result.accuracy_std == pytest.approx(0.2)
    assert np.array_equal(result.best_thresholds, best)
    assert result.n_pairs == 20


def test_hand_case_val_far_per_fold() -> None:
    # VAL grid 0.001, target 1e-3; training folds hold 9 different pairs (FAR step 1/9).
    # fold 0..8: smallest train impostor 0.5625 (fold 9) -> FAR 0 up to t = 0.562,
    #            1/9 from 0.563 -> t = 0.562 + (1e-3 / (1/9)) * 0.001 = 0.562009
    #            fold 0 test same 1.0 rejected (VAL 0); folds 1..8 accept 0.25 (VAL 1); FAR 0
    # fold 9: train impostors 2.25x9 -> FAR 0 up to t = 2.250 (strict <), 1 from 2.251
    #            -> t = 2.25 + 1e-3 * 0.001 = 2.250001; test accepts 0.25 and 0.5625
    #            -> VAL 1, FAR 1
    # VAL mean 0.9, std sqrt((0.81 + 9 * 0.01) / 10) = 0.3; FAR mean 0.1
    assert VAL_THRESHOLDS[2250] == 2.25
    emb, issame = _hand_case()
    vals, fars, thrs = kfold_val_far(pair_distances(emb), issame, kfold_splits(20, 10))
    assert vals.tolist() == [0.0] + [1.0] * 9
    assert fars.tolist() == [0.0] * 9 + [1.0]
    np.testing.assert_allclose(thrs, [0.562009] * 9 + [2.250001], rtol=0, atol=1e-12)
    result = evaluate_pairs(emb, issame)
    assert (result.val, result.val_std, result.far) == pytest.approx((0.9, 0.3, 0.1))


def test_separable_embeddings_score_perfectly() -> None:
    # Genuine distances all below the first non-zero grid threshold 0.01: every fold picks
    # 0.01 and no held-out genuine pair can fall above it (with a narrower margin the first
    # argmax may sit just above the training genuines and miss a held-out one, as upstream).
    emb, issame = _random_pairs(seed=1, n=600, dim=64, noise=0.02)
    dist = pair_distances(emb)
    assert dist[issame].max() < 0.01 and dist[~issame].min() > 1.0
    result = evaluate_pairs(emb, issame)
    assert result.accuracy == 1.0
    assert result.accuracy_std == 0.0
    assert result.best_thresholds.tolist() == [0.01] * 10
    assert result.val == 1.0
    assert result.auc == 1.0


def test_random_embeddings_score_chance() -> None:
    emb, issame = _random_pairs(seed=2, n=6000, dim=512, noise=None)
    result = evaluate_pairs(emb, issame)
    assert 0.46 < result.accuracy < 0.54
    assert 0.47 < result.auc < 0.53
    assert result.val < 0.05


# --------------------------------------------------------- brute-force reference (loops)


def _ref_protocol(emb: np.ndarray, issame: np.ndarray, n_folds: int, far_target: float) -> dict:
    """insightface's procedure with plain loops; VAL threshold by the documented rule."""
    rows, same = emb.tolist(), [bool(s) for s in issame]
    n = len(same)
    dist = []
    for i in range(n):
        pairs = zip(rows[2 * i], rows[2 * i + 1], strict=True)
        dist.append(sum((x - y) ** 2 for x, y in pairs))
    acc_grid, val_grid = ACC_THRESHOLDS.tolist(), VAL_THRESHOLDS.tolist()
    out: dict[str, list[float]] = {k: [] for k in ("acc", "best", "val", "far", "thr", "dist")}
    out["dist"] = dist
    start = 0
    for k in range(n_folds):
        size = n // n_folds + (1 if k < n % n_folds else 0)
        test = list(range(start, start + size))
        train = [i for i in range(n) if i < start or i >= start + size]
        start += size
        # accuracy: first threshold with the most correct training predictions
        best_t, best_correct = acc_grid[0], -1
        for t in acc_grid:
            correct = sum(1 for i in train if (dist[i] < t) == same[i])
            if correct > best_correct:
                best_t, best_correct = t, correct
        out["best"].append(best_t)
        out["acc"].append(sum(1 for i in test if (dist[i] < best_t) == same[i]) / len(test))
        # VAL: training FAR at every threshold, then the polyline rule
        impostors = [dist[i] for i in train if not same[i]]
        fars = [sum(1 for d in impostors if d < t) / len(impostors) for t in val_grid]
        if max(fars) < far_target:
            thr = 0.0
        else:
            j = max(i for i in range(len(fars)) if fars[i] <= far_target)
            if fars[j] == far_target:
                thr = val_grid[j]
            else:
                slope = (val_grid[j + 1] - val_grid[j]) / (fars[j + 1] - fars[j])
                thr = val_grid[j] + (far_target - fars[j]) * slope
        out["thr"].append(thr)
        ta = sum(1 for i in test if same[i] and dist[i] < thr)
        fa = sum(1 for i in test if not same[i] and dist[i] < thr)
        n_same = sum(1 for i in test if same[i])
        out["val"].append(ta / n_same if n_same else 0.0)
        out["far"].append(fa / (len(test) - n_same) if len(test) > n_same else 0.0)
    return out


@pytest.mark.parametrize(("n_folds", "far_target"), [(10, 1e-3), (7, 0.05)])
def test_matches_brute_force_reference(n_folds: int, far_target: float) -> None:
    emb, issame = _random_pairs(seed=3, n=300, dim=16, noise=1.2)
    ref = _ref_protocol(emb, issame, n_folds, far_target)
    dist = pair_distances(emb)
    np.testing.assert_allclose(dist, ref["dist"], rtol=1e-13)
    folds = kfold_splits(300, n_folds)
    accs, best = kfold_accuracy(ref["dist"], issame, folds)
    vals, fars, thrs = kfold_val_far(ref["dist"], issame, folds, far_target)
    assert accs.tolist() == ref["acc"]
    assert best.tolist() == ref["best"]
    assert vals.tolist() == ref["val"]
    assert fars.tolist() == ref["far"]
    np.testing.assert_allclose(thrs, ref["thr"], rtol=1e-15, atol=0)
    assert 0.6 < np.mean(accs) < 0.99  # the case is neither trivial nor hopeless
    result = evaluate_pairs(emb, issame, n_folds=n_folds, far_target=far_target)
    assert result.accuracy == pytest.approx(np.mean(ref["acc"]), abs=1e-12)
    assert result.accuracy_std == pytest.approx(np.std(ref["acc"]), abs=1e-12)
    assert result.best_thresholds.tolist() == ref["best"]
    assert result.val == pytest.approx(np.mean(ref["val"]), abs=1e-12)
    assert result.val_std == pytest.approx(np.std(ref["val"]), abs=1e-12)
    assert result.far == pytest.approx(np.mean(ref["far"]), abs=1e-12)


# ---------------------------------------------------------------------------- VAL@FAR


def test_threshold_at_far_rule() -> None:
    thresholds = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    far = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    assert threshold_at_far(far, thresholds, 0.0) == 0.1  # level hit: largest threshold
    assert threshold_at_far(far, thresholds, 0.5) == 0.3
    assert threshold_at_far(far, thresholds, 0.25) == pytest.approx(0.15)  # 0.1 -> 0.2
    assert threshold_at_far(far, thresholds, 0.75) == pytest.approx(0.35)  # 0.3 -> 0.4
    assert threshold_at_far(far * 0.001, thresholds, 0.01) == 0.0  # max FAR below target
    with pytest.raises(ValueError, match="non-decreasing"):
        threshold_at_far(far[::-1], thresholds, 0.1)


def test_repeated_far_values_give_a_finite_val() -> None:
    # 100 pairs, 10 folds of (5 same at 0.25, 1 impostor at 1.5625, 4 impostors at 2.25).
    # Training: 45 impostors, 9 tied at 1.5625 -> FAR is 0 up to t = 1.562, then jumps to
    # 0.2 at 1.563 (scipy's interp1d refuses the repeated FARs). Rule: t = 1.562 +
    # (1e-3 / 0.2) * 0.001 = 1.562005, below the tied impostors -> VAL 1, FAR 0 on every
    # fold. (Joining the largest thresholds of both levels would give 1.5654 and FAR 0.2.)
    fold = [0.25] * 5 + [1.5625] + [2.25] * 4
    emb = _embed_distances(fold * 10)
    issame = np.array(([True] * 5 + [False] * 5) * 10)
    train, _ = kfold_splits(100, 10)[0]
    far = far_curve(pair_distances(emb)[train], issame[train])
    assert np.unique(far).size < far.size
    _, _, thrs = kfold_val_far(pair_distances(emb), issame, kfold_splits(100, 10))
    np.testing.assert_allclose(thrs, 1.562005, rtol=0, atol=1e-12)
    result = evaluate_pairs(emb, issame)
    assert np.isfinite(result.val)
    assert (result.val, result.val_std, result.far) == (1.0, 0.0, 0.0)


# -------------------------------------------------------------------------------- ROC


def test_roc_hand_case() -> None:
    # sorted: 0.1 S, 0.2 D, 0.3 S, 0.4 S, 0.5 D   (3 same, 2 different)
    dist = np.array([0.3, 0.2, 0.5, 0.1, 0.4])
    issame = np.array([True, False, False, True, True])
    fpr, tpr, thresholds = roc_curve(dist, issame)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert thresholds.tolist() == [-np.inf, 0.1, 0.2, 0.3, 0.4, 0.5]
    # 4 of the 6 (same, different) pairs are ordered correctly
    assert auc(fpr, tpr) == pytest.approx(2 / 3)
    assert tar_at_far(fpr, tpr, 0.0) == pytest.approx(1 / 3)
    assert tar_at_far(fpr, tpr, 0.49) == pytest.approx(1 / 3)
    assert tar_at_far(fpr, tpr, 0.5) == 1.0
    assert tar_at_far(np.array([0.2, 1.0]), np.array([0.5, 1.0]), 0.1) == 0.0


def test_roc_tied_distances_make_one_diagonal_step() -> None:
    fpr, tpr, thresholds = roc_curve(np.array([0.7, 0.7]), np.array([True, False]))
    assert (fpr.tolist(), tpr.tolist(), thresholds.tolist()) == ([0, 1], [0, 1], [-np.inf, 0.7])
    assert auc(fpr, tpr) == 0.5


def test_roc_auc_separable_and_random() -> None:
    emb, issame = _random_pairs(seed=4, n=1000, dim=64, noise=0.1)
    assert auc(*roc_curve(pair_distances(emb), issame)[:2]) == 1.0
    emb, issame = _random_pairs(seed=5, n=4000, dim=64, noise=None)
    assert auc(*roc_curve(pair_distances(emb), issame)[:2]) == pytest.approx(0.5, abs=0.03)


# ------------------------------------------------------------------------- validation


def _valid() -> tuple[np.ndarray, np.ndarray]:
    return _random_pairs(seed=6, n=20, dim=4, noise=0.5)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda e, s: (e[:-1], s), "even number of rows"),
        (lambda e, s: (e, s[:-1]), "shape"),
        (lambda e, s: (np.where(np.arange(e.size).reshape(e.shape) == 5, np.nan, e), s), "NaN"),
        (lambda e, s: (e[:16], s[:8]), "at least n_folds"),
        (lambda e, s: (e[0], s), "non-empty"),
        (lambda e, s: (e, np.ones_like(s)), "both same"),
        (lambda e, s: (e, s * 2.5), "booleans"),
    ],
)
def test_evaluate_pairs_rejects_bad_input(mutate, match: str) -> None:
    emb, issame = mutate(*_valid())
    with pytest.raises(ValueError, match=match):
        evaluate_pairs(emb, issame)


def test_evaluate_pairs_rejects_bad_far_target() -> None:
    with pytest.raises(ValueError, match="far_target"):
        evaluate_pairs(*_valid(), far_target=1.5)


def test_result_to_dict_is_json_ready() -> None:
    emb, issame = _valid()
    data = evaluate_pairs(emb, issame.astype(int), n_folds=5).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert len(data["best_thresholds"]) == 5
    assert data["n_pairs"] == 20
    assert all(type(data[k]) is float for k in ("accuracy", "val", "far", "auc"))


def test_lfw_sized_set_runs() -> None:  # its timing: bench/pair_verification.py
    emb, issame = _random_pairs(seed=7, n=6000, dim=512, noise=1.0)
    result = evaluate_pairs(emb, issame)
    assert result.n_pairs == 6000 and 0.5 < result.accuracy <= 1.0
