"""Score-list metrics: ROC equal to sklearn's, insightface's TAR@FAR reading, EER by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics  # the reference (installed with mlflow)

from arcflow.evaluate.scores import auc, eer, roc_points, tar_at_far_nearest

pytestmark = pytest.mark.unit

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _sklearn_roc():
    return sklearn_metrics.roc_curve


def _insightface_reading(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """The IJB notebooks' loop: flipud both, then min over (distance, index) tuples."""
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, index = min(zip(abs(fpr - far), range(len(fpr)), strict=True))
    return float(tpr[index])


def _tied_scores(rng: np.random.Generator, n: int, levels: int, dtype: type) -> np.ndarray:
    return (rng.integers(0, levels, n) / levels).astype(dtype)


# ---------------------------------------------------------------------------- roc_points


def test_roc_points_known_answer() -> None:
    fpr, tpr, thr = roc_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert np.array_equal(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    assert np.array_equal(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    assert np.array_equal(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])


def test_roc_points_drops_collinear_points_and_merges_ties() -> None:
    # descending: 0.9 (1), 0.8 (1), 0.7 (1) collinear; then 0.5 x2 tied (1 + 0); 0.1 (0)
    labels = np.array([1, 1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.1])
    fpr, tpr, thr = roc_points(labels, scores)
    assert np.array_equal(thr, [np.inf, 0.9, 0.7, 0.5, 0.1])
    assert np.array_equal(tpr, [0.0, 0.25, 0.75, 1.0, 1.0])
    assert np.array_equal(fpr, [0.0, 0.0, 0.0, 0.5, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("levels", [2, 3, 17, 1000])
def test_roc_points_equal_sklearn_with_ties(dtype: type, levels: int) -> None:
    roc_curve = _sklearn_roc()
    rng = np.random.default_rng(levels)
    for n in (3, 10, 257, 20_000):
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        if dtype == np.int64:
            scores = rng.integers(-levels, levels, n)
        else:
            scores = _tied_scores(rng, n, levels, dtype)
        expected = roc_curve(labels, scores)
        got = roc_points(labels, scores)
        for e, g in zip(expected, got, strict=True):
            assert g.dtype == e.dtype
            assert np.array_equal(g, e)


def test_roc_points_equal_sklearn_on_float32_cosines() -> None:
    roc_curve = _sklearn_roc()
    rng = np.random.default_rng(0)
    n = 200_000
    labels = (rng.random(n) < 0.01).astype(np.int8)
    scores = (rng.standard_normal(n) * 0.1 + 0.5 * labels).astype(np.float32)
    scores[:1000] = np.round(scores[:1000], 2)  # many exact ties across both classes
    for e, g in zip(roc_curve(labels, scores), roc_points(labels, scores), strict=True):
        assert np.array_equal(g, e)


def test_roc_points_accepts_bool_labels() -> None:
    fpr, tpr, _ = roc_points(np.array([False, True, True]), np.array([0.2, 0.1, 0.3]))
    assert np.array_equal(fpr, [0.0, 0.0, 1.0, 1.0])
    assert np.array_equal(tpr, [0.0, 0.5, 0.5, 1.0])


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([1, 1], [0.1, 0.2], "genuine and impostor"),
        ([0, 0], [0.1, 0.2], "genuine and impostor"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "label 2 at position 2"),
        ([0, 1], [0.1], r"shape \(1,\)"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "nan at position 1"),
        ([0, 1], [[0.1, 0.2]], "1-D"),
    ],
)
def test_roc_points_rejects_bad_input(labels: list, scores: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        roc_points(np.array(labels), np.array(scores))


# ---------------------------------------------------------------------- TAR at FAR


def test_tar_at_far_nearest_ties_go_to_the_largest_tpr() -> None:
    fpr = np.array([0.0, 0.25, 0.75, 1.0])
    tpr = np.array([0.0, 0.5, 0.9, 1.0])
    assert tar_at_far_nearest(fpr, tpr, 0.5) == 0.9  # 0.25 and 0.75 are equally near
    assert tar_at_far_nearest(fpr, tpr, 0.3) == 0.5
    assert tar_at_far_nearest(fpr, tpr, 1e-6) == 0.0
    # repeated FPR values: the last (largest TPR) of the run wins
    assert tar_at_far_nearest([0.0, 0.0, 0.0, 1.0], [0.0, 0.3, 0.6, 1.0], 1e-4) == 0.6


def test_tar_at_far_nearest_equals_the_reference_loop_on_sklearn_roc() -> None:
    roc_curve = _sklearn_roc()
    rng = np.random.default_rng(7)
    for n, levels in ((50_000, 10_000), (30_000, 50), (1000, 5)):
        labels = (rng.random(n) < 0.3).astype(int)
        scores = _tied_scores(rng, n, levels, np.float32) + 0.2 * labels
        fpr, tpr, _ = roc_curve(labels, scores)
        for far in (*FARS, 0.3, 0.5, 0.999):
            assert tar_at_far_nearest(fpr, tpr, far) == _insightface_reading(fpr, tpr, far)


# ------------------------------------------------------------------------ EER, AUC


def test_eer_interpolates_between_the_surrounding_points() -> None:
    # fnr = 1 - tpr = [1, .4, 0, 0]; fpr = [0, 0, .5, 1]: on the segment (0, .6) -> (.5, 1)
    # at fraction t, fpr = .5 t and fnr = .4 - .4 t meet at t = 4/9, so EER = 2/9
    assert eer([0.0, 0.0, 0.5, 1.0], [0.0, 0.6, 1.0, 1.0]) == pytest.approx(2 / 9, abs=1e-15)


def test_eer_exact_hit_and_perfect_separation() -> None:
    assert eer([0.0, 0.25, 1.0], [0.0, 0.75, 1.0]) == 0.25
    assert eer([0.0, 0.0, 1.0], [0.0, 1.0, 1.0]) == 0.0
    assert eer([0.0, 1.0, 1.0], [0.0, 0.0, 1.0]) == 1.0


def test_eer_is_unchanged_by_dropped_intermediate_points() -> None:
    roc_curve = _sklearn_roc()
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 5000)
    scores = rng.standard_normal(5000) + labels
    fpr, tpr, _ = roc_points(labels, scores)
    full_fpr, full_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert fpr.size < full_fpr.size
    assert eer(fpr, tpr) == pytest.approx(eer(full_fpr, full_tpr), abs=1e-12)
    fnr = 1 - full_tpr
    i = np.argmax(fnr <= full_fpr)
    assert full_fpr[i - 1] <= eer(fpr, tpr) <= full_fpr[i]


def test_auc_matches_sklearn() -> None:
    metrics = sklearn_metrics
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 3000)
    scores = _tied_scores(rng, 3000, 40, np.float64) + 0.1 * labels
    fpr, tpr, _ = roc_points(labels, scores)
    assert auc(fpr, tpr) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_readers_reject_misaligned_curves() -> None:
    with pytest.raises(ValueError, match="aligned"):
        eer([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="aligned"):
        tar_at_far_nearest([], [], 1e-4)
