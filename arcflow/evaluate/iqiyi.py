"""iQIYI-VID (2018) video retrieval scored by MAP@100.

Definitions (ground-truth files: :mod:`arcflow.data.protocols.iqiyi`):

- Queries: every label ``!= 0`` of the evaluation ground truth ``{label: videos}``.
- Identity centre: the mean of the L2-normalised video features of the label's training
  videos (train ground truth ``{video: label}``), L2-normalised.
- Ranked list: the evaluation videos given (the gallery) sorted by cosine to the centre,
  best first (ties: gallery order), cut to the first ``top`` (100) = a submission line.
- AP@100 of query ``q``: ``(1/m_q) * sum_{k=1..n_q} P_q(k) * rel_q(k)``, with ``m_q`` the
  number of ground-truth videos of ``q``, ``n_q = len(ranked list) <= 100``, ``P_q(k)`` the
  fraction of relevant videos among the first ``k`` and ``rel_q(k)`` 1 iff the ``k``-th video
  is one of ``q``'s. MAP@100 is the mean over queries; a query without a list scores 0.

Ground-truth videos absent from the gallery (no features) can never be retrieved but still
count in ``m_q``. Scores are computed in blocks of queries so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from arcflow.data.protocols.iqiyi import MAX_RESULTS, queries
from arcflow.errors import DataFormatError
from arcflow.evaluate.result import BenchmarkResult
from arcflow.evaluate.videos import EmptyGroupError, checked_l2_normalise, normalised_means

#: Scores held at once: (queries in a block) x (gallery videos) <= this many.
BLOCK_ELEMENTS = 1 << 24


# ------------------------------------------------------------------------- centres


def identity_centres(
    train_gt: Mapping[str, int],
    videos: Sequence[str],
    feats: np.ndarray,
    labels: Iterable[int],
) -> dict[int, np.ndarray]:
    """{label: centre} for ``labels``: re-normalised mean of its normalised training videos.

    A label without training videos, or a training video of one of ``labels`` missing from
    ``videos``, raises DataFormatError naming it.
    """
    emb = np.asarray(feats)
    if emb.ndim != 2 or emb.shape[0] != len(videos):
        raise ValueError(f"feats must be ({len(videos)}, D), got shape {emb.shape}")
    row = {video: i for i, video in enumerate(videos)}
    slot = {label: i for i, label in enumerate(labels)}
    rows, groups = [], []
    for video, label in train_gt.items():
        if label not in slot:
            continue
        if video not in row:
            raise DataFormatError(f"training video {video} (label {label}) has no features")
        rows.append(row[video])
        groups.append(slot[label])
    names = list(slot)
    try:
        centres = normalised_means(
            emb[np.asarray(rows, dtype=np.intp)],
            np.asarray(groups, dtype=np.intp),
            len(names),
            lambda g: f"label {names[g]}",
        )
    except EmptyGroupError as exc:
        raise DataFormatError(
            f"label {names[exc.group]} has no training video to build its centre from"
        ) from None
    return dict(zip(names, centres, strict=True))


# ------------------------------------------------------------------------- ranking


def _top_order(scores: np.ndarray, top: int) -> np.ndarray:
    """Indices of the ``top`` best scores, best first, ties in index order."""
    n = scores.size
    if n > top:
        kth = np.partition(scores, n - top)[n - top]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    return candidates[np.lexsort((candidates, -scores[candidates]))][:top]


def _normalised_gallery(names: Sequence[str], feats: np.ndarray) -> np.ndarray:
    emb = np.asarray(feats)
    if emb.ndim != 2 or emb.shape[0] != len(names) or emb.shape[1] == 0:
        raise ValueError(f"video_feats must be ({len(names)}, D), got shape {emb.shape}")
    emb = emb.astype(np.result_type(emb.dtype, np.float32), copy=False)
    return checked_l2_normalise(emb, lambda i: f"video {names[i]}")


def rank_videos(
    centres: Mapping[int, np.ndarray],
    video_names: Sequence[str],
    video_feats: np.ndarray,
    top: int = MAX_RESULTS,
) -> dict[int, tuple[str, ...]]:
    """{label: the ``top`` gallery videos by cosine to the label's centre, best first}."""
    if top < 1:
        raise ValueError(f"top must be positive, got {top}")
    gallery = _normalised_gallery(video_names, video_feats)
    labels = list(centres)
    if not labels or gallery.shape[0] == 0:
        return {label: () for label in labels}
    queries_ = np.stack([np.asarray(centres[label]) for label in labels]).astype(gallery.dtype)
    if queries_.shape[1] != gallery.shape[1]:
        raise ValueError(f"centres are {queries_.shape[1]}-d but videos {gallery.shape[1]}-d")
    block = max(1, BLOCK_ELEMENTS // gallery.shape[0])
    ranking: dict[int, tuple[str, ...]] = {}
    for lo in range(0, len(labels), block):
        scores = queries_[lo : lo + block] @ gallery.T
        for label, row in zip(labels[lo : lo + block], scores, strict=True):
            ranking[label] = tuple(video_names[i] for i in _top_order(row, top))
    return ranking


# ------------------------------------------------------------------------- scoring


def average_precision(
    ranked: Sequence[str], relevant: Sequence[str], top: int = MAX_RESULTS
) -> float:
    """AP@top of one ranked list against its ground-truth videos (see the module docstring)."""
    truth = set(relevant)
    if not truth:
        raise ValueError("a query needs at least one ground-truth video")
    ranked = list(ranked)[:top]
    if len(set(ranked)) != len(ranked):
        raise ValueError("a ranked list names a video twice")
    hits = np.array([video in truth for video in ranked], dtype=bool)
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(np.sum(precision[hits]) / len(truth))


def mean_average_precision(
    ranking: Mapping[int, Sequence[str]],
    gt: Mapping[int, Sequence[str]],
    top: int = MAX_RESULTS,
) -> float:
    """MAP@top over the queries of ``gt`` (labels != 0); lists are cut to ``top``.

    ``ranking`` may be :func:`rank_videos`' output or a submission read with
    ``read_submission``; a missing query scores 0, labels that are not queries are ignored.
    """
    wanted = queries(gt)
    if not wanted:
        raise ValueError("the ground truth holds no query (every label is 0)")
    return float(
        np.mean([average_precision(ranking.get(q, ()), vids, top) for q, vids in wanted.items()])
    )


def evaluate_iqiyi(
    train_gt: Mapping[str, int],
    train_videos: Sequence[str],
    train_feats: np.ndarray,
    eval_gt: Mapping[int, Sequence[str]],
    eval_videos: Sequence[str],
    eval_feats: np.ndarray,
    top: int = MAX_RESULTS,
) -> BenchmarkResult:
    """MAP@top of retrieving ``eval_gt``'s videos among ``eval_videos`` by identity centre.

    ``train_*`` / ``eval_*`` are video names and their features (``video_features``).
    """
    wanted = queries(eval_gt)
    if not wanted:
        raise DataFormatError("the evaluation ground truth holds no query (every label is 0)")
    centres = identity_centres(train_gt, train_videos, train_feats, list(wanted))
    ranking = rank_videos(centres, eval_videos, eval_feats, top)
    gallery = set(eval_videos)
    missing = sum(video not in gallery for videos in wanted.values() for video in videos)
    return BenchmarkResult(
        metrics={f"map_at_{top}": mean_average_precision(ranking, wanted, top)},
        details={
            "queries": len(wanted),
            "gallery_videos": len(gallery),
            "gt_videos": sum(len(v) for v in wanted.values()),
            "gt_videos_without_features": int(missing),
            "train_videos": sum(label in wanted for label in train_gt.values()),
        },
    )
