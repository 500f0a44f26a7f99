"""IJB-B / IJB-C: template pooling, 1:1 verification (TAR@FAR) and 1:N open-set identification.

Reference procedure (insightface ``ijb_11.py``, the "N1D1F1" rows of its IJB notebooks): image
feature = ``f(x) + f(flip(x))`` without per-image normalisation, times the detector's faceness
score; a template is the sum over its media of the mean feature of the media's images,
L2-normalised; a pair's score is the dot product of its two templates. The 1:1 ROC is read
with :func:`~arcflow.evaluate.scores.tar_at_far_nearest`. The 1:N protocol follows
Keras_insightface ``IJB_evals.py`` (``run_model_test_1N``): galleries G1 and G2 are searched
separately; rank-k pools the hits of both over all probes, TPIR is the mean of the two
galleries'; ties are resolved pessimistically. See :func:`identify_1n_galleries`.

Everything works on template *rows*: template ids are looked up once, pooling is one sparse
matrix product, and 1:1 scores are gathered from block matrix products between the distinct
templates of each side (IJB-C's 15.66M pairs in about a second on two cores).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, get_args

import numpy as np
from scipy import sparse

from arcflow.data.protocols.ijb import FaceTidMid, TemplatePairs, TemplateTable
from arcflow.errors import DataFormatError
from arcflow.evaluate.embed import l2_normalize
from arcflow.evaluate.result import BenchmarkResult, VerificationScores, rate_key
from arcflow.evaluate.scores import auc, binary_labels, eer, roc_points, tar_at_far_nearest

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RANKS = (1, 5, 10)
FPIRS = (1e-2, 1e-1)
BLOCK_BYTES = 256 << 20  # largest score block held at once
_DENSE_LOOKUP_MAX = 1 << 24  # id span up to which ids are looked up in a dense int32 table

Lookup = Callable[[np.ndarray], np.ndarray]
RankPooling = Literal["pooled", "averaged"]


# ---------------------------------------------------------------------------- inputs


def _ids(values: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = f"({n},)" if n is not None else "1-D"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _matrix(values: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    """A (n, D) float32 array (copied only when it is not float32 already)."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] == 0 or (n is not None and arr.shape[0] != n):
        rows = n if n is not None else "N"
        raise ValueError(f"{name} must have shape ({rows}, D), got {arr.shape}")
    return arr


def _vector(values: np.ndarray | None, name: str, n: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float32)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


# --------------------------------------------------------------------------- lookup


def _lookup(template_ids: np.ndarray) -> Lookup:
    """A function mapping ids to their row in ``template_ids`` (-1 for unknown ids)."""
    ids = _ids(template_ids, "template_ids")
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    dup = np.flatnonzero(srt[1:] == srt[:-1])
    if dup.size:
        raise ValueError(f"template_ids must be unique; {srt[dup[0]]} appears more than once")
    if srt.size == 0:
        return lambda q: np.full(np.shape(q), -1, np.int64)
    lo, span = int(srt[0]), int(srt[-1]) - int(srt[0]) + 1
    if span <= max(_DENSE_LOOKUP_MAX, 4 * srt.size):
        table = np.full(span, -1, np.int32 if srt.size < 2**31 else np.int64)
        table[srt - lo] = order

        def dense(q: np.ndarray) -> np.ndarray:
            off = q - lo
            inside = (off >= 0) & (off < span)
            return np.where(inside, table[np.where(inside, off, 0)], -1)

        return dense

    def bisect(q: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(srt, q), srt.size - 1)
        return np.where(srt[pos] == q, order[pos], -1)

    return bisect


def _first_unknown(rows: np.ndarray) -> int | None:
    bad = np.flatnonzero(rows < 0)
    return int(bad[0]) if bad.size else None


def _compact(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows used (ascending) and each entry's position among them."""
    used = np.zeros(n, bool)
    used[rows] = True
    distinct = np.flatnonzero(used)
    local = np.empty(n, np.int64)
    local[distinct] = np.arange(distinct.size)
    return distinct, local[rows]


# -------------------------------------------------------------------------- pooling


def _pooling(
    template_ids: np.ndarray, media_ids: np.ndarray
) -> tuple[np.ndarray, sparse.csr_array]:
    """Sorted unique template ids and the (T, N) matrix averaging media and summing them.

    Entry (t, i) is ``1 / n`` for image i of template t, n being the number of images that
    template t has from image i's media: the sum over media of the mean within each media.
    """
    n = template_ids.shape[0]
    tids, t_row = np.unique(template_ids, return_inverse=True)
    _, m_row = np.unique(media_ids, return_inverse=True)
    group = t_row * (int(m_row.max(initial=0)) + 1) + m_row
    _, g_row, g_size = np.unique(group, return_inverse=True, return_counts=True)
    share = (1.0 / g_size[g_row]).astype(np.float32)
    pool = sparse.csr_array((share, (t_row, np.arange(n))), shape=(tids.size, n))
    return tids, pool


def _pool(pool: sparse.csr_array, features: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """``pool @ (weights[:, None] * features)`` without a scaled copy of the features."""
    if weights is not None:
        data = pool.data * weights[pool.indices]
        pool = sparse.csr_array((data, pool.indices, pool.indptr), shape=pool.shape)
    return np.asarray(pool @ features, dtype=np.float32)


def template_features(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    faceness: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(template ids sorted, (T, D) float32 unit features)`` pooled from image features.

    Each image row (aligned with ``template_ids`` / ``media_ids``) is multiplied by its
    ``faceness`` when given; within a template the images of each media are averaged and the
    media means summed; the sum is L2-normalised (an all-zero template stays zero).
    """
    feats = _matrix(features, "features")
    n = feats.shape[0]
    tids = _ids(template_ids, "template_ids", n)
    mids = _ids(media_ids, "media_ids", n)
    weights = _vector(faceness, "faceness", n)
    unique_tids, pool = _pooling(tids, mids)
    return unique_tids, l2_normalize(_pool(pool, feats, weights))


# ------------------------------------------------------------------------------ 1:1


def _pair_rows(lookup: Lookup, t1: np.ndarray, t2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for side, ids in (("first", t1), ("second", t2)):
        r = lookup(ids)
        bad = _first_unknown(r)
        if bad is not None:
            raise DataFormatError(
                f"pair {bad}: {side} template {ids[bad]} has no features (not a known template)"
            )
        rows.append(r)
    return rows[0], rows[1]


def score_template_pairs(
    template_ids: np.ndarray,
    template_feats: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> np.ndarray:
    """Cosine score (dot of the unit template features) of every pair ``(t1[i], t2[i])``.

    Computes ``A @ B.T`` between the distinct templates of each side, ``block_bytes`` of scores
    at a time, and gathers the pairs from it. float32, shape ``(P,)``. An id without features
    raises :class:`DataFormatError` naming the pair index and the id.
    """
    feats = _matrix(template_feats, "template_feats")
    lookup = _lookup(_ids(template_ids, "template_ids", feats.shape[0]))
    t1 = _ids(t1, "t1")
    t2 = _ids(t2, "t2", t1.shape[0])
    rows1, rows2 = _pair_rows(lookup, t1, t2)
    used1, local1 = _compact(rows1, feats.shape[0])
    used2, local2 = _compact(rows2, feats.shape[0])
    del rows1, rows2
    a, b = feats[used1], feats[used2]
    step = max(1, block_bytes // (4 * max(b.shape[0], 1)))
    scores = np.empty(t1.shape[0], np.float32)
    for lo in range(0, a.shape[0], step):
        hi = min(lo + step, a.shape[0])
        block = (a[lo:hi] @ b.T).ravel()
        whole = lo == 0 and hi == a.shape[0]
        sel = slice(None) if whole else np.flatnonzero((local1 >= lo) & (local1 < hi))
        scores[sel] = block[(local1[sel] - lo) * b.shape[0] + local2[sel]]
    return scores


def verify_11(
    scores: np.ndarray,
    labels: np.ndarray,
    fars: Sequence[float] = FARS,
    prefix: str = "",
) -> BenchmarkResult:
    """TAR at each FAR (insightface's nearest-FPR reading), AUC and EER of one score list."""
    fpr, tpr, _ = roc_points(labels, scores)
    metrics = {rate_key(prefix + "tar_far", far): tar_at_far_nearest(fpr, tpr, far) for far in fars}
    metrics[prefix + "auc"] = auc(fpr, tpr)
    metrics[prefix + "eer"] = eer(fpr, tpr)
    n_genuine = int(np.count_nonzero(binary_labels(labels, len(scores))))
    details = {"n_genuine": n_genuine, "n_impostor": len(scores) - n_genuine}
    return BenchmarkResult(metrics, roc=(fpr, tpr), details=details)


# ------------------------------------------------------------------------------ 1:N


def _search_rows(lookup: Lookup, tids: np.ndarray, what: str) -> np.ndarray:
    rows = lookup(tids)
    bad = _first_unknown(rows)
    if bad is not None:
        raise DataFormatError(f"{what} template {tids[bad]} (position {bad}) has no features")
    return rows


def _check_rates(ranks: Sequence[int], fpirs: Sequence[float]) -> None:
    for k in ranks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ranks must be positive integers, got {k!r}")
    for f in fpirs:
        if not 0 < f <= 1:
            raise ValueError(f"fpirs must lie in (0, 1], got {f!r}")


def _subject_scores(probes: np.ndarray, gallery: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(B, S) best score of each probe against each gallery subject (columns grouped by subject)."""
    scores = probes @ gallery.T
    if starts.size == gallery.shape[0]:
        return scores
    return np.maximum.reduceat(scores, starts, axis=1)


def _search(
    feats: np.ndarray,
    gallery_rows: np.ndarray,
    subject_of_row: np.ndarray,
    probe_rows: np.ndarray,
    mated_col: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mated scores, non-mated subjects scoring >= them (mated probes), and best non-mated scores.

    ``mated_col[i]`` is probe i's gallery subject column, or -1 when it has none.
    """
    order = np.argsort(subject_of_row, kind="stable")
    gallery = feats[gallery_rows[order]]
    srt = subject_of_row[order]
    starts = np.flatnonzero(np.concatenate(([True], srt[1:] != srt[:-1])))
    step = max(1, BLOCK_BYTES // (4 * gallery.shape[0]))
    mated, above, best_nonmated = [], [], []
    for lo in range(0, probe_rows.size, step):
        cols = mated_col[lo : lo + step]
        scores = _subject_scores(feats[probe_rows[lo : lo + step]], gallery, starts)
        has = cols >= 0
        hit = scores[has]
        m = hit[np.arange(hit.shape[0]), cols[has]]
        mated.append(m)
        above.append(np.count_nonzero(hit >= m[:, None], axis=1) - 1)
        best_nonmated.append(scores[~has].max(axis=1, initial=-np.inf))
    return np.concatenate(mated), np.concatenate(above), np.concatenate(best_nonmated)


def _identify(
    template_ids: np.ndarray,
    template_feats: np.ndarray,
    gallery_tids: np.ndarray,
    gallery_subjects: np.ndarray,
    probe_tids: np.ndarray,
    probe_subjects: np.ndarray,
    fpirs: Sequence[float],
) -> tuple[np.ndarray, dict[str, float]]:
    """One gallery's search: for each mated probe, how many non-mated subjects score >= its
    mated score; and TPIR at each FPIR (see :func:`identify_1n`)."""
    feats = _matrix(template_feats, "template_feats")
    lookup = _lookup(_ids(template_ids, "template_ids", feats.shape[0]))
    g_tids = _ids(gallery_tids, "gallery_tids")
    g_subjects = _ids(gallery_subjects, "gallery_subjects", g_tids.size)
    p_tids = _ids(probe_tids, "probe_tids")
    p_subjects = _ids(probe_subjects, "probe_subjects", p_tids.size)
    if g_tids.size == 0:
        raise ValueError("the gallery has no templates")
    g_rows = _search_rows(lookup, g_tids, "gallery")
    p_rows = _search_rows(lookup, p_tids, "probe")
    subjects, subject_of_row = np.unique(g_subjects, return_inverse=True)
    col = np.minimum(np.searchsorted(subjects, p_subjects), subjects.size - 1)
    mated_col = np.where(subjects[col] == p_subjects, col, -1)
    if not (mated_col >= 0).any():
        raise ValueError("no probe's subject is in the gallery; rank and TPIR are undefined")
    mated, above, nonmated = _search(feats, g_rows, subject_of_row, p_rows, mated_col)
    tpir: dict[str, float] = {}
    nonmated = np.sort(nonmated)[::-1]
    for f in fpirs:
        if nonmated.size == 0:
            tpir[rate_key("tpir_fpir", f)] = float("nan")
            continue
        threshold = nonmated[max(int(nonmated.size * f) - 1, 0)]
        tpir[rate_key("tpir_fpir", f)] = float(np.mean((above == 0) & (mated > threshold)))
    return above, tpir


def _rank_rates(above: np.ndarray, ranks: Sequence[int]) -> dict[str, float]:
    return {f"rank{k}": float(np.mean(above < k)) for k in ranks}


def identify_1n(
    template_ids: np.ndarray,
    template_feats: np.ndarray,
    gallery_tids: np.ndarray,
    gallery_subjects: np.ndarray,
    probe_tids: np.ndarray,
    probe_subjects: np.ndarray,
    ranks: Sequence[int] = RANKS,
    fpirs: Sequence[float] = FPIRS,
) -> dict[str, float]:
    """Open-set search of every probe template in one gallery: ``rank<k>`` and TPIR@FPIR.

    Score = dot of unit template features; a gallery subject with several templates scores the
    max over them. A probe is mated when its subject is in the gallery. Rank-k is correct iff
    fewer than k non-mated subjects score >= the mated score (ties count against the probe, so
    rank 1 needs the mated score strictly above every other subject). The FPIR threshold is
    ``sorted_desc(best score of each non-mated probe)[max(int(n * fpir) - 1, 0)]``; TPIR is the
    fraction of mated probes that are rank-1 correct with a mated score > threshold (NaN when
    no probe is non-mated). Rates are fractions of the mated probes.
    """
    _check_rates(ranks, fpirs)
    above, tpir = _identify(
        template_ids,
        template_feats,
        gallery_tids,
        gallery_subjects,
        probe_tids,
        probe_subjects,
        fpirs,
    )
    return {**_rank_rates(above, ranks), **tpir}


def table_templates(table: TemplateTable, name: str = "table") -> tuple[np.ndarray, np.ndarray]:
    """``(template ids sorted, subject ids)`` of a NIST 1:N CSV (one row a face).

    A template listed with two different SUBJECT_IDs raises :class:`DataFormatError` naming both
    rows (counted from 1 after the header).
    """
    tids = _ids(table.template_ids, f"{name} TEMPLATE_ID")
    subjects = _ids(table.subject_ids, f"{name} SUBJECT_ID", tids.size)
    unique, first, inverse = np.unique(tids, return_index=True, return_inverse=True)
    clash = np.flatnonzero(subjects != subjects[first][inverse])
    if clash.size:
        j = int(clash[0])
        i = int(first[inverse[j]])
        raise DataFormatError(
            f"{name}: template {tids[j]} has SUBJECT_ID {subjects[i]} (row {i + 1}) and "
            f"{subjects[j]} (row {j + 1}); rows count from 1 after the header"
        )
    return unique, subjects[first]


def identify_1n_galleries(
    template_ids: np.ndarray,
    template_feats: np.ndarray,
    galleries: Sequence[TemplateTable] | Mapping[str, TemplateTable],
    probes: TemplateTable,
    ranks: Sequence[int] = RANKS,
    fpirs: Sequence[float] = FPIRS,
    rank_pooling: RankPooling = "pooled",
) -> dict[str, float]:
    """:func:`identify_1n` in each gallery (IJB-C G1, G2) combined; keys prefixed ``1n_``.

    ``rank_pooling="pooled"`` (the reference): ``rank<k>`` = hits summed over the galleries /
    mated searches summed over them. Keras_insightface divides by the number of probes, which
    is the same when every probe is mated in exactly one gallery, as in IJB-B/C (the galleries
    split the subjects). ``"averaged"``: the mean of the galleries' rates. TPIR is always the
    mean of the galleries' TPIRs, as in the reference.
    """
    if rank_pooling not in get_args(RankPooling):
        raise ValueError(
            f"rank_pooling must be one of {get_args(RankPooling)}, got {rank_pooling!r}"
        )
    _check_rates(ranks, fpirs)
    named = (
        dict(galleries)
        if isinstance(galleries, Mapping)
        else {f"gallery {i + 1}": g for i, g in enumerate(galleries)}
    )
    if not named:
        raise ValueError("1:N identification needs at least one gallery")
    p_tids, p_subjects = table_templates(probes, "probes")
    runs = []
    for name, table in named.items():
        g_tids, g_subjects = table_templates(table, name)
        runs.append(
            _identify(template_ids, template_feats, g_tids, g_subjects, p_tids, p_subjects, fpirs)
        )
    if rank_pooling == "pooled":
        rates = _rank_rates(np.concatenate([above for above, _ in runs]), ranks)
    else:
        per_gallery = [_rank_rates(above, ranks) for above, _ in runs]
        rates = {key: float(np.mean([r[key] for r in per_gallery])) for key in per_gallery[0]}
    rates.update({key: float(np.mean([t[key] for _, t in runs])) for key in runs[0][1]})
    return {f"1n_{key}": value for key, value in rates.items()}


# ------------------------------------------------------------------------------ all


def _check_meta(meta: FaceTidMid, pairs: TemplatePairs) -> int:
    n = len(meta.template_ids)
    if len(meta.media_ids) != n or len(meta.names) != n:
        raise ValueError(
            f"face_tid_mid columns differ in length: {len(meta.names)} names, "
            f"{n} template ids, {len(meta.media_ids)} media ids"
        )
    p = len(pairs.template1)
    if len(pairs.template2) != p or len(pairs.labels) != p:
        raise ValueError(
            f"template pairs differ in length: {p} / {len(pairs.template2)} ids, "
            f"{len(pairs.labels)} labels"
        )
    return n


def _inverse_norms(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0).astype(np.float32)


def evaluate_ijb(
    plain: np.ndarray,
    flipped: np.ndarray | None,
    meta: FaceTidMid,
    faceness: np.ndarray | None,
    pairs: TemplatePairs,
    galleries: Sequence[TemplateTable] | Mapping[str, TemplateTable] | None = None,
    probes: TemplateTable | None = None,
    fars: Sequence[float] = FARS,
    rank_pooling: RankPooling = "pooled",
) -> BenchmarkResult:
    """1:1 (and with ``galleries`` and ``probes``, 1:N) IJB metrics from per-image features.

    ``plain`` = f(x), ``flipped`` = f(flip(x)) (or None), both (N, D) unnormalised, rows in
    ``meta`` order; ``faceness`` (N,) the detector scores from ``name_5pts_score`` (None: all 1).
    Reference variant (plain keys, e.g. ``tar_far_1e-4``; the result's ROC): image feature =
    ``plain + flipped`` times faceness. Plain variant (``plain_`` keys): unit ``plain`` only.
    1:N metrics (``1n_`` keys) use the reference variant, ``rank_pooling`` as in
    :func:`identify_1n_galleries`. The result's ``scores`` are the
    reference variant's template-pair cosines with their labels. Pooling is linear, so ``plain`` and
    ``flipped`` are pooled separately and added: no (N, D) copy of the features is made.
    """
    n = _check_meta(meta, pairs)
    plain = _matrix(plain, "plain", n)
    if flipped is not None:
        flipped = _matrix(flipped, "flipped", n)
        if flipped.shape != plain.shape:
            raise ValueError(f"flipped has shape {flipped.shape}, plain {plain.shape}")
    weights = _vector(faceness, "faceness", n)
    if (galleries is None) != (probes is None):
        raise ValueError("1:N identification needs both galleries and probes")
    tids, pool = _pooling(
        _ids(meta.template_ids, "template_ids"), _ids(meta.media_ids, "media_ids")
    )
    ref = _pool(pool, plain, weights)
    if flipped is not None:
        ref += _pool(pool, flipped, weights)
    ref = l2_normalize(ref)
    unit = l2_normalize(_pool(pool, plain, _inverse_norms(plain)))
    t1, t2 = pairs.template1, pairs.template2
    scores = score_template_pairs(tids, ref, t1, t2)
    main = verify_11(scores, pairs.labels, fars)
    alt = verify_11(score_template_pairs(tids, unit, t1, t2), pairs.labels, fars, "plain_")
    metrics = {**main.metrics, **alt.metrics}
    if galleries is not None and probes is not None:
        metrics.update(
            identify_1n_galleries(tids, ref, galleries, probes, rank_pooling=rank_pooling)
        )
    details = {
        **main.details,
        "n_images": n,
        "n_templates": int(tids.size),
        "flip": "f(x)+f(flip(x))" if flipped is not None else "none",
        "faceness": "yes" if weights is not None else "no",
    }
    if galleries is not None:
        details["1n_rank_pooling"] = rank_pooling
    genuine = binary_labels(pairs.labels, scores.size)
    return BenchmarkResult(
        metrics,
        roc=main.roc,
        details=details,
        scores=VerificationScores(scores, genuine, "template"),
    )
