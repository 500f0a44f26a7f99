"""Pair-verification metrics (LFW-style 10-fold accuracy, VAL@FAR, ROC).

The procedure equals insightface ``arcface_torch/eval/verification.py`` on the same
embeddings: squared-L2 pair distances, contiguous un-shuffled k folds, the best accuracy
threshold picked on the training folds (first argmax on ``arange(0, 4, 0.01)``) and
VAL@FAR with the threshold chosen on the training folds (``arange(0, 4, 0.001)``).
A pair is predicted "same" iff ``dist < threshold`` (strict).

The one deliberate difference is how the VAL threshold is read off the training FAR
curve; see :func:`threshold_at_far`. Everything is vectorised over thresholds with
sort + ``searchsorted``; only numpy is used.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: Threshold grid for the accuracy protocol (insightface ``calculate_roc``).
ACC_THRESHOLDS = np.arange(0, 4, 0.01)
#: Threshold grid for the VAL@FAR protocol (insightface ``calculate_val``).
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
ACC_THRESHOLDS.setflags(write=False)
VAL_THRESHOLDS.setflags(write=False)

Fold = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """Metrics of one pair set; ``best_thresholds`` holds one accuracy threshold per fold."""

    accuracy: float
    accuracy_std: float
    best_thresholds: np.ndarray
    val: float
    val_std: float
    far: float
    auc: float
    n_pairs: int

    def to_dict(self) -> dict[str, float | int | list[float]]:
        """Plain Python numbers, ready for ``json.dumps`` or MLflow."""
        return {
            "accuracy": float(self.accuracy),
            "accuracy_std": float(self.accuracy_std),
            "best_thresholds": [float(t) for t in self.best_thresholds],
            "val": float(self.val),
            "val_std": float(self.val_std),
            "far": float(self.far),
            "auc": float(self.auc),
            "n_pairs": int(self.n_pairs),
        }


# --------------------------------------------------------------------------- inputs


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance of each pair (rows ``2i`` and ``2i+1``), shape ``(N,)``.

    Computed in the embeddings' own float precision, exactly like insightface.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty (2N, D) array, got shape {emb.shape}")
    if emb.shape[0] % 2:
        raise ValueError(f"embeddings need an even number of rows (pairs), got {emb.shape[0]}")
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float64)
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or infinite values")
    diff = np.subtract(emb[0::2], emb[1::2])
    return np.sum(np.square(diff), axis=1)


def _as_issame(issame: np.ndarray, n: int) -> np.ndarray:
    """``issame`` as a bool vector of length ``n`` (bools or 0/1 accepted)."""
    arr = np.asarray(issame)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"issame must have shape ({n},) to match the pairs, got {arr.shape}")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError("issame must hold booleans (or 0/1)")
    return arr.astype(bool)


def _as_dist_issame(dist: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances as float64 (exact for float32 input) and a matching bool vector."""
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"dist must be 1-D, got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError("dist contains NaN")
    return d, _as_issame(issame, d.shape[0])


def kfold_splits(n: int, n_folds: int) -> list[Fold]:
    """Contiguous, un-shuffled folds of ``range(n)`` as ``(train_idx, test_idx)`` pairs.

    sklearn ``KFold(n_splits, shuffle=False)`` sizing: every fold has ``n // n_folds``
    elements and the first ``n % n_folds`` folds one more. ``n_folds == 1`` trains and
    tests on everything (insightface ``LFold``).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ValueError(f"n_folds must be a positive integer, got {n_folds!r}")
    if n < n_folds:
        raise ValueError(f"need at least n_folds={n_folds} pairs to split, got {n}")
    indices = np.arange(n)
    if n_folds == 1:
        return [(indices, indices)]
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    return [
        (np.concatenate((indices[:lo], indices[hi:])), indices[lo:hi])
        for lo, hi in itertools.pairwise(bounds.tolist())
    ]


# ------------------------------------------------------------------------- accuracy


def _count_below(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, how many ``values`` are strictly below it."""
    return np.searchsorted(np.sort(values), thresholds, side="left")


def accuracy(dist: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    """(TP + TN) / n with "same" predicted iff ``dist < threshold``."""
    d, same = _as_dist_issame(dist, issame)
    if d.size == 0:
        return 0.0
    return float(np.count_nonzero((d < threshold) == same)) / d.size


def best_threshold_accuracy(
    dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray = ACC_THRESHOLDS
) -> tuple[float, float]:
    """``(threshold, accuracy)`` maximising accuracy on this set; ties -> first threshold."""
    d, same = _as_dist_issame(dist, issame)
    t = np.asarray(thresholds, dtype=np.float64)
    if d.size == 0 or t.size == 0:
        raise ValueError("best_threshold_accuracy needs at least one pair and one threshold")
    true_pos = _count_below(d[same], t)
    true_neg = np.count_nonzero(~same) - _count_below(d[~same], t)
    correct = true_pos + true_neg
    best = int(np.argmax(correct))
    return float(t[best]), float(correct[best]) / d.size


def kfold_accuracy(
    dist: np.ndarray,
    issame: np.ndarray,
    folds: list[Fold],
    thresholds: np.ndarray = ACC_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold held-out accuracy and the per-fold best threshold chosen on the training part."""
    d, same = _as_dist_issame(dist, issame)
    accs, best = np.zeros(len(folds)), np.zeros(len(folds))
    for k, (train, test) in enumerate(folds):
        best[k], _ = best_threshold_accuracy(d[train], same[train], thresholds)
        accs[k] = accuracy(d[test], same[test], best[k])
    return accs, best


# -------------------------------------------------------------------------- VAL@FAR


def far_curve(
    dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray = VAL_THRESHOLDS
) -> np.ndarray:
    """FAR = FA / n_diff at every threshold (all zeros when there are no different pairs)."""
    d, same = _as_dist_issame(dist, issame)
    t = np.asarray(thresholds, dtype=np.float64)
    n_diff = np.count_nonzero(~same)
    if n_diff == 0:
        return np.zeros(t.shape)
    return _count_below(d[~same], t) / n_diff


def threshold_at_far(far: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """Threshold for ``far_target``: linear interpolation of threshold as a function of FAR.

    insightface calls ``interp1d(far, thresholds, kind='slinear')``, which current SciPy
    rejects whenever FAR values repeat, and they always do (FAR(t) is a step function,
    0 on a whole run of small thresholds). Rule used here: take the polyline through the
    grid points ``(far_i, t_i)`` in threshold order; a target strictly between two FAR
    levels lies on the single segment joining the LAST threshold of the lower level to
    the FIRST threshold of the next level (one grid step), and a target equal to a level
    takes the LARGEST threshold of that level (the most permissive threshold with that
    FAR, so the highest VAL). With distinct FAR values this is exactly ``interp1d``.
    Joining the largest thresholds of both levels instead would overshoot a block of
    tied impostor distances and land at the upper level's FAR. As in insightface, the
    threshold is 0.0 when ``max(far) < far_target``. ``far`` must be non-decreasing in
    the threshold (true for any FAR curve on a grid).
    """
    f = np.asarray(far, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if f.ndim != 1 or f.shape != t.shape or f.size == 0:
        raise ValueError(f"far and thresholds must be non-empty and aligned: {f.shape} {t.shape}")
    order = np.argsort(t, kind="stable")
    f, t = f[order], t[order]
    if np.any(np.diff(f) < 0):
        raise ValueError("far must be non-decreasing as the threshold grows")
    if f[-1] < far_target:
        return 0.0
    j = int(np.searchsorted(f, far_target, side="right")) - 1
    if j < 0:
        return float(t[0])
    if f[j] == far_target:
        return float(t[j])
    return float(t[j] + (far_target - f[j]) * (t[j + 1] - t[j]) / (f[j + 1] - f[j]))


def val_far(dist: np.ndarray, issame: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(VAL, FAR)`` = (TA / n_same, FA / n_diff) at ``threshold``; an empty class gives 0."""
    d, same = _as_dist_issame(dist, issame)
    accept = d < threshold
    n_same, n_diff = np.count_nonzero(same), np.count_nonzero(~same)
    val = np.count_nonzero(accept & same) / n_same if n_same else 0.0
    far = np.count_nonzero(accept & ~same) / n_diff if n_diff else 0.0
    return float(val), float(far)


def kfold_val_far(
    dist: np.ndarray,
    issame: np.ndarray,
    folds: list[Fold],
    far_target: float = 1e-3,
    thresholds: np.ndarray = VAL_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-fold held-out VAL, FAR and the threshold picked on the training part."""
    d, same = _as_dist_issame(dist, issame)
    vals, fars, thrs = np.zeros(len(folds)), np.zeros(len(folds)), np.zeros(len(folds))
    for k, (train, test) in enumerate(folds):
        train_far = far_curve(d[train], same[train], thresholds)
        thrs[k] = threshold_at_far(train_far, thresholds, far_target)
        vals[k], fars[k] = val_far(d[test], same[test], thrs[k])
    return vals, fars, thrs


# ------------------------------------------------------------------------------ ROC


def roc_curve(dist: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` with score ``-dist``: "same" iff ``dist <= threshold``.

    ``thresholds`` are the sorted unique distances, preceded by ``-inf`` (accept nothing,
    the point (0, 0)); the last point is (1, 1). Tied distances form one diagonal step.
    """
    d, same = _as_dist_issame(dist, issame)
    n_same, n_diff = np.count_nonzero(same), np.count_nonzero(~same)
    if n_same == 0 or n_diff == 0:
        raise ValueError("roc_curve needs at least one same and one different pair")
    order = np.argsort(d, kind="stable")
    d_sorted, same_sorted = d[order], same[order]
    ends = np.append(np.flatnonzero(np.diff(d_sorted)), d.size - 1)
    tp = np.cumsum(same_sorted)[ends]
    fp = (ends + 1) - tp
    tpr = np.concatenate(([0.0], tp / n_same))
    fpr = np.concatenate(([0.0], fp / n_diff))
    return fpr, tpr, np.concatenate(([-np.inf], d_sorted[ends]))


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (``fpr`` ascending)."""
    x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """Largest TPR among ROC points with FPR <= ``far`` (0.0 if there is none)."""
    x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    ok = x <= far
    return float(y[ok].max()) if ok.any() else 0.0


# ----------------------------------------------------------------------------- entry


def evaluate_pairs(
    embeddings: np.ndarray,
    issame: np.ndarray,
    n_folds: int = 10,
    far_target: float = 1e-3,
) -> VerificationResult:
    """Full verification protocol on ``embeddings`` (2N, D) and ``issame`` (N,).

    Embeddings are used as given (flip-summing and L2 normalisation happen upstream).
    Raises ValueError on malformed input, on fewer pairs than folds and when the set does
    not contain both same and different pairs.
    """
    dist = pair_distances(embeddings).astype(np.float64)
    same = _as_issame(issame, dist.shape[0])
    if not same.any() or same.all():
        raise ValueError("issame must contain both same (True) and different (False) pairs")
    if not (np.isfinite(far_target) and 0.0 <= far_target <= 1.0):
        raise ValueError(f"far_target must lie in [0, 1], got {far_target!r}")
    folds = kfold_splits(dist.shape[0], n_folds)
    accs, best = kfold_accuracy(dist, same, folds)
    vals, fars, _ = kfold_val_far(dist, same, folds, far_target)
    fpr, tpr, _ = roc_curve(dist, same)
    return VerificationResult(
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        best_thresholds=best,
        val=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far=float(np.mean(fars)),
        auc=auc(fpr, tpr),
        n_pairs=int(dist.shape[0]),
    )
