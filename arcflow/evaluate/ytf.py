"""YouTube Faces (YTF) video-pair verification.

Each pair of ``splits.txt`` (in file order) is scored by the squared L2 distance of its two
video features (see :mod:`arcflow.evaluate.videos`). The folds are the file's own splits:
fold ``k`` tests on the pairs of split ``k`` and picks its thresholds on all other pairs,
with exactly the threshold searches of :mod:`arcflow.evaluate.verification` (accuracy on
``arange(0, 4, 0.01)``, first best, "same" iff ``dist < t``; VAL@FAR via
``threshold_at_far``). A file with a single split trains and tests on it (insightface
``LFold``). Reported: mean and std (ddof 0) of the fold accuracies and VALs, the mean FAR,
and AUC and EER of the ROC over all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arcflow.data.protocols.ytf import YTFSplits
from arcflow.errors import DataFormatError
from arcflow.evaluate import verification as ver
from arcflow.evaluate.result import BenchmarkResult
from arcflow.evaluate.scores import eer


def _pair_rows(videos: Sequence[str], splits: YTFSplits) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of each pair's two videos; a video without features raises."""
    row = {video: i for i, video in enumerate(videos)}
    if len(row) != len(videos):
        raise ValueError("videos lists a video twice")
    first_line = 1 if splits.header is None else 2
    rows = np.empty((len(splits.pairs), 2), dtype=np.intp)
    for i, pair in enumerate(splits.pairs):
        for j, video in enumerate((pair.video1, pair.video2)):
            if video not in row:
                raise DataFormatError(
                    f"YTF splits line {first_line + i} (split {pair.split}, pair {pair.number}): "
                    f"video {video!r} has no features",
                    hint="every video named in splits.txt needs aligned frames",
                )
            rows[i, j] = row[video]
    return rows[:, 0], rows[:, 1]


def split_folds(split_of_pair: np.ndarray) -> list[ver.Fold]:
    """One fold per split number (ascending): test = that split's pairs, train = the rest."""
    numbers = np.unique(split_of_pair)
    if numbers.size == 1:
        everything = np.arange(split_of_pair.size)
        return [(everything, everything)]
    return [
        (np.flatnonzero(split_of_pair != k), np.flatnonzero(split_of_pair == k)) for k in numbers
    ]


def evaluate_ytf(
    videos: Sequence[str],
    feats: np.ndarray,
    splits: YTFSplits,
    far_target: float = 1e-3,
) -> BenchmarkResult:
    """YTF metrics of video features ``feats`` (row ``i`` = ``videos[i]``, ``<Name>/<video>``)."""
    emb = np.asarray(feats)
    if emb.ndim != 2 or emb.shape[0] != len(videos):
        raise ValueError(f"feats must be ({len(videos)}, D), got shape {emb.shape}")
    if not (np.isfinite(far_target) and 0.0 <= far_target <= 1.0):
        raise ValueError(f"far_target must lie in [0, 1], got {far_target!r}")
    if not splits.pairs:
        raise DataFormatError("YTF splits hold no pairs")
    first, second = _pair_rows(videos, splits)
    pairs = np.empty((2 * first.size, emb.shape[1]), dtype=emb.dtype)
    pairs[0::2], pairs[1::2] = emb[first], emb[second]
    dist = ver.pair_distances(pairs).astype(np.float64)
    same = np.array([p.same for p in splits.pairs])
    if same.all() or not same.any():
        raise DataFormatError("YTF splits need both same and different pairs")
    folds = split_folds(np.array([p.split for p in splits.pairs]))
    accs, best = ver.kfold_accuracy(dist, same, folds)
    vals, fars, _ = ver.kfold_val_far(dist, same, folds, far_target)
    fpr, tpr, _ = ver.roc_curve(dist, same)
    metrics = {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "val": float(np.mean(vals)),
        "val_std": float(np.std(vals)),
        "far": float(np.mean(fars)),
        "auc": ver.auc(fpr, tpr),
        "eer": eer(fpr, tpr),
    }
    details = {
        "pairs": int(dist.size),
        "splits": len(folds),
        "videos": int(np.unique(np.concatenate((first, second))).size),
        "far_target": float(far_target),
        "mean_threshold": float(np.mean(best)),
    }
    return BenchmarkResult(metrics=metrics, roc=(fpr, tpr), details=details)
