"""Exact top-k gallery search: cosine (dot product) scores, scanned in chunks of gallery rows.

For each chunk of ``chunk_rows`` gallery rows, one float32 matmul scores every probe against
it into a reused buffer; only scores above each probe's current k-th best can still enter
(a tie loses to the earlier row), so those few are merged into a running top-k. A chunk with
many candidates (the first, or a gallery in ascending order) is first cut to each probe's own
top-k; the first chunk is short (:data:`FIRST_ROWS`) to keep that cut cheap. Extra memory is
O(P x chunk_rows), never O(P x N); ``chunk_rows`` defaults to what fits ``budget_bytes``
(:data:`DEFAULT_BUDGET`). The gallery may be a read-only memory map
(:func:`arcflow.serve.embeddings_file.read_embeddings`).

Order: score descending, then gallery row ascending. With ``labels`` the result is the top-k
*identities*: each identity scores its best row (the lowest such row on a tie) and appears
once, however many rows it has. Scores are dot products, i.e. cosines for unit rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BUDGET = 64 << 20  # bytes of scratch memory per search
# scratch bytes per (probe, gallery row) score: the score (4), its partitioned copy on the
# dense path (4), two boolean masks (2) and the candidate lists (kept under 1/8 of the chunk)
BYTES_PER_SCORE = 16
FIRST_ROWS = 4096  # rows of the first chunk, whose candidates are all dense
_DENSE = 8  # a chunk with more than 1/_DENSE of its scores as candidates is cut per probe first


@dataclass(frozen=True)
class SearchResult:
    """Per probe, the best ``k' = min(k, gallery rows or identities)`` matches, best first."""

    indices: np.ndarray  # (P, k') int64 gallery rows (by identity: each identity's best row)
    scores: np.ndarray  # (P, k') float32
    identities: np.ndarray | None = None  # (P, k') the labels of those rows, with ``labels``


def chunk_rows_for(budget_bytes: int, probes: int, dim: int, *, convert: bool = False) -> int:
    """Gallery rows per chunk so that scoring ``probes`` probes stays within ``budget_bytes``
    (plus ``dim`` float32 per row when the gallery's chunks must be converted to float32)."""
    per_row = max(1, probes) * BYTES_PER_SCORE + (4 * dim if convert else 0)
    if budget_bytes < per_row:
        raise ValueError(
            f"memory budget of {budget_bytes} bytes is below one gallery row for {probes} "
            f"probes ({per_row} bytes); raise it or search fewer probes at once"
        )
    return int(budget_bytes // per_row)


def search(
    probes: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    labels: np.ndarray | None = None,
    chunk_rows: int | None = None,
    budget_bytes: int = DEFAULT_BUDGET,
) -> SearchResult:
    """The exact top-``k`` gallery rows (or identities, given per-row ``labels``) per probe.

    ``probes`` (P, D) and ``gallery`` (N, D) are float arrays (the gallery may be a memory
    map; float32 is scanned without copies). ``chunk_rows`` overrides the rows per chunk
    chosen from ``budget_bytes``. ``labels`` (N,) may be any sortable values (strings, ints);
    they cost O(N) memory on top of the budget.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    q = np.asarray(probes)
    g = np.asarray(gallery)  # a memory map stays a map (a view, no copy)
    if q.ndim != 2 or q.dtype.kind not in "fiu":
        raise ValueError(f"probes must be a (P, D) number array, got {q.dtype} {q.shape}")
    if g.ndim != 2 or g.dtype.kind != "f" or g.shape[1] < 1:
        raise ValueError(f"gallery must be a (N, D >= 1) float array, got {g.dtype} {g.shape}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"probes are {q.shape[1]}-d but the gallery is {g.shape[1]}-d "
            "(embedded by a different model?)"
        )
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("probes contain NaN or infinite values")
    n, p = len(g), len(q)
    codes = names = None
    present = n
    if labels is not None:
        codes, names, present = _identity_codes(labels, n)
    convert = g.dtype != np.float32 or not g.flags.c_contiguous
    if chunk_rows is None:
        chunk_rows = chunk_rows_for(budget_bytes, p, g.shape[1], convert=convert)
    elif (
        isinstance(chunk_rows, bool)
        or not isinstance(chunk_rows, int | np.integer)
        or chunk_rows < 1
    ):
        raise ValueError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
    chunk_rows = max(1, min(int(chunk_rows), n))
    top = _TopK(p, int(k), n, codes, 0 if names is None else len(names), present)
    buffer = np.empty(p * chunk_rows, np.float32)
    start = 0
    while start < n:  # a short first chunk sets each probe's bar: later chunks stay sparse
        block = g[start : start + (chunk_rows if start else min(chunk_rows, FIRST_ROWS))]
        if convert:
            block = np.ascontiguousarray(block, dtype=np.float32)
        scores = buffer[: p * len(block)].reshape(p, len(block))
        np.matmul(q, block.T, out=scores)
        top.update(scores, start)
        start += len(block)
    return top.result(names)


def _nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask, sorted by row; ~30x faster through the flat indices."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def _non_finite(start: int, rows: int) -> ValueError:
    return ValueError(
        f"gallery rows {start}..{start + rows - 1} give NaN or infinite scores "
        "(non-finite or huge values in the gallery)"
    )


def _identity_codes(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(code per row in [0, K), the K names, how many of them occur). Non-negative integer
    labels up to 2N (an embeddings file's ``identity_index``) are their own codes: no sort."""
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have one value per gallery row ({n}), got {lab.shape}")
    if lab.dtype.kind in "iu" and n and int(lab.min()) >= 0 and int(lab.max()) <= 2 * n:
        counts = np.bincount(lab.astype(np.intp, copy=False))
        return lab, np.arange(len(counts), dtype=lab.dtype), int(np.count_nonzero(counts))
    names, codes = np.unique(lab, return_inverse=True)
    return codes.reshape(n), names, len(names)


class _TopK:
    """Each probe's best k so far, sorted (score desc, row asc); unfilled places hold
    sentinels (score -inf, rows N.., codes K..) that every real row beats."""

    def __init__(
        self, p: int, k: int, n: int, codes: np.ndarray | None, n_codes: int, present: int
    ) -> None:
        self.k, self.codes = k, codes
        self.scores = np.full((p, k), -np.inf, np.float32)
        self.rows = np.tile(np.arange(n, n + k, dtype=np.int64), (p, 1))
        self.ids = np.tile(np.arange(n_codes, n_codes + k, dtype=np.int64), (p, 1))
        self.real = min(k, present)  # places that real rows (or identities) fill

    def update(self, scores: np.ndarray, start: int) -> None:
        """Merge one chunk's scores (P, c) of gallery rows ``start ..``."""
        kth = self.scores[:, -1]
        # only scores above the k-th can still enter (a tie loses to the earlier row); a row
        # maximum is a fast reduction, so probes with nothing to enter cost no further pass
        best = scores.max(axis=1)  # NaN and +inf propagate: one check for the whole chunk
        if not np.isfinite(best).all():
            raise _non_finite(start, scores.shape[1])
        hit = np.flatnonzero(best > kth)
        if hit.size == 0:
            return
        sub = scores if hit.size == len(scores) else scores[hit]
        enter = sub > kth[hit, None]
        if np.count_nonzero(enter) * _DENSE <= scores.size:
            rows, cols = _nonzero(enter)
            self._merge(hit[rows], cols, scores, start)
            return
        del enter, sub
        pending = hit
        m = self.k
        while pending.size:  # cut each probe's chunk to its top m rows (ties at the cut kept)
            sub = scores if pending.size == len(scores) else scores[pending]
            c = sub.shape[1]
            cut = (
                np.partition(sub, c - m, axis=1)[:, c - m] if m < c else np.full(len(sub), -np.inf)
            )
            cut = np.maximum(cut, kth[pending])
            rows, cols = _nonzero(sub >= cut[:, None])
            keep = sub[rows, cols] > kth[pending][rows]
            rows = pending[rows[keep]]
            self._merge(rows, cols[keep], scores, start)
            if m >= c:
                break
            # by identity, the top m rows may hold fewer than k identities: then rows below
            # the cut could still enter, so those probes go again with a deeper cut
            pending = pending[self.scores[pending, -1] < cut]
            m *= 8

    def _merge(self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, start: int) -> None:
        """Merge candidates (probe ``rows``, chunk ``cols``; sorted by probe) into the top-k."""
        if rows.size == 0:
            return
        touched = np.unique(rows)
        k = self.k
        r = np.concatenate([np.repeat(touched, k), rows])
        s = np.concatenate([self.scores[touched].ravel(), scores[rows, cols]])
        g = np.concatenate([self.rows[touched].ravel(), cols.astype(np.int64) + start])
        if self.codes is not None:
            ids = np.concatenate([self.ids[touched].ravel(), self.codes[g[len(touched) * k :]]])
            order = np.lexsort((g, -s, ids, r))  # per probe and identity, its best row first
            r, s, g, ids = r[order], s[order], g[order], ids[order]
            first = np.ones(len(r), bool)
            first[1:] = (r[1:] != r[:-1]) | (ids[1:] != ids[:-1])
            r, s, g, ids = r[first], s[first], g[first], ids[first]
        order = np.lexsort((g, -s, r))
        r = r[order]
        starts = np.searchsorted(r, touched)
        place = np.arange(len(r)) - np.repeat(starts, np.diff(np.append(starts, len(r))))
        best = order[place < k]  # every probe has >= k entries (its k current ones)
        self.scores[touched] = s[best].reshape(-1, k)
        self.rows[touched] = g[best].reshape(-1, k)
        if self.codes is not None:
            self.ids[touched] = ids[best].reshape(-1, k)

    def result(self, names: np.ndarray | None) -> SearchResult:
        keep = slice(0, self.real)
        scores, rows = self.scores[:, keep].copy(), self.rows[:, keep].copy()
        if not np.isfinite(scores).all():  # a -inf score never entered: a sentinel is left
            raise ValueError("the gallery gives -inf scores (infinite values in the gallery)")
        if names is None:
            return SearchResult(rows, scores)
        return SearchResult(rows, scores, names[self.ids[:, keep]])


def search_labels(identity_index: np.ndarray, identity_names: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-row search labels: the identity's index, and a label of its own (``K + row``) for
    each row without an identity, so that unnamed faces are ranked one by one instead of as a
    single "no identity" group. Also returns ``K``, the first per-row label."""
    k = len(identity_names)
    labels = identity_index.astype(np.int64)
    unnamed = np.flatnonzero(identity_names == "")
    if len(unnamed):
        rows = np.flatnonzero(np.isin(identity_index, unnamed))
        labels[rows] = k + rows
    return labels, k
