"""Metrics of a scored list of comparisons (1 = genuine, 0 = impostor), shared by the benchmarks.

:func:`roc_points` returns exactly what ``sklearn.metrics.roc_curve(labels, scores)`` returns
(``drop_intermediate=True``, a first point ``(0, 0)`` at threshold ``+inf``), computed with one
plain sort of the scores instead of a stable argsort, so IJB-C's 15.66M float32 scores take
about a second. :func:`tar_at_far_nearest` reads TAR at a FAR the way insightface's IJB scripts
do, and :func:`eer` gives the equal error rate. Higher scores mean "more alike".
"""

from __future__ import annotations

import numpy as np

from arcflow.evaluate.verification import auc

__all__ = ["auc", "binary_labels", "eer", "roc_points", "tar_at_far_nearest"]


def binary_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """``labels`` (bools or 0/1, length ``n``) as a bool vector, True = genuine."""
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the scores, got {arr.shape}")
    if arr.dtype != np.bool_:
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if bad.size:
            raise ValueError(f"labels must be 0 or 1; label {arr[bad[0]]} at position {bad[0]}")
    return arr.astype(bool)


def _checked_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if s.dtype == np.bool_ or not np.issubdtype(s.dtype, np.number):
        s = s.astype(np.float64)
    if np.issubdtype(s.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(s))
        if bad.size:
            raise ValueError(f"scores must be finite; {s[bad[0]]} at position {bad[0]}")
    return s


def _counts_at_thresholds(
    scores: np.ndarray, genuine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores descending, and how many impostors / genuines score >= each (int64)."""
    ascending = np.sort(scores)
    first = np.empty(ascending.size, bool)
    first[0] = True
    np.not_equal(ascending[1:], ascending[:-1], out=first[1:])
    starts = np.flatnonzero(first)  # first position of each distinct value
    del first
    values = ascending[starts]
    del ascending
    # every genuine score is one of ``values``: count them per value, then accumulate downwards
    per_value = np.bincount(np.searchsorted(values, scores[genuine]), minlength=values.size)
    tps = np.cumsum(per_value[::-1])
    fps = (scores.size - starts)[::-1] - tps
    return values[::-1], fps, tps


def _corners(fps: np.ndarray, tps: np.ndarray) -> np.ndarray:
    """Indices sklearn keeps with ``drop_intermediate``: ends, and points where the curve bends."""
    keep = np.ones(fps.size, bool)
    if fps.size > 2:
        keep[1:-1] = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
    return np.flatnonzero(keep)


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, array-equal to ``sklearn.metrics.roc_curve(labels, scores)``.

    Point i accepts every comparison with ``score >= thresholds[i]``; thresholds descend from
    ``+inf`` (float64), fpr and tpr ascend (float64). Collinear intermediate points are dropped
    as sklearn does. Unlike sklearn, a list without genuine or without impostor comparisons is
    an error rather than a warning and NaN rates.
    """
    s = _checked_scores(scores)
    genuine = binary_labels(labels, s.size)
    n_genuine = int(np.count_nonzero(genuine))
    if n_genuine == 0 or n_genuine == s.size:
        raise ValueError(
            f"a ROC needs genuine and impostor scores; got {n_genuine} genuine of {s.size}"
        )
    values, fps, tps = _counts_at_thresholds(s, genuine)
    keep = _corners(fps, tps)
    fps = np.concatenate(([0.0], fps[keep].astype(np.float64)))
    tps = np.concatenate(([0.0], tps[keep].astype(np.float64)))
    thresholds = np.concatenate(([np.inf], values[keep].astype(np.float64)))
    return fps / fps[-1], tps / tps[-1], thresholds


def _roc_arrays(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"fpr and tpr must be non-empty, 1-D and aligned: {x.shape} {y.shape}")
    return x, y


def tar_at_far_nearest(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """TPR of the ROC point whose FPR is nearest to ``far`` (insightface's IJB reading).

    insightface reverses both arrays and takes ``min(zip(abs(fpr - far), range(n)))``: the
    smallest distance, ties going to the first point of the reversed order, i.e. the last
    point of the ascending ROC (the largest TPR among equally near points).
    """
    x, y = _roc_arrays(fpr, tpr)
    x, y = np.flipud(x), np.flipud(y)
    return float(y[int(np.argmin(np.abs(x - far)))])


def eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Equal error rate: where the false non-match rate ``1 - tpr`` meets ``fpr``.

    Walking the ROC in ascending FPR, take the first point i with ``1 - tpr[i] <= fpr[i]``
    and interpolate linearly between points i-1 and i (both rates move linearly along the
    segment, so they are equal at the crossing); at an exact hit this is ``fpr[i]``. Points
    that ``drop_intermediate`` removed lie on such segments, so they do not change the value.
    """
    x, y = _roc_arrays(fpr, tpr)
    gap = x - (1.0 - y)  # increases along the curve: < 0 before the crossing, >= 0 after
    i = int(np.argmax(gap >= 0)) if (gap >= 0).any() else x.size - 1
    if i == 0 or gap[i] == 0:
        return float(x[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(x[i - 1] + t * (x[i] - x[i - 1]))
