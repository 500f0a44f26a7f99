"""Trillion-Pairs (DeepGlint): verification TPR@FPR=1e-9, identification TPR@FPR=1e-3.

The official evaluation server's code is not public; ArcFlow implements this definition.
Probes P are labelled (~274K images of ~5.7K identities), distractors G unlabelled (~1.58M,
identities disjoint from P); the score is the dot product of L2-normalised features.

- Impostors: every unordered pair of probes of different identities, plus every probe x
  distractor pair (~4.7e11 in all). Genuine: every unordered pair of same-identity probes.
- Threshold at a rate ``r``: with ``m = floor(r * #impostors)``, the ``(m + 1)``-th highest
  impostor score ``t_r`` (at most m impostors score above it); a pair is accepted iff its score
  is strictly above ``t_r``.
- Verification ``ver_tpr_fpr_1e-9`` = #genuine above ``t_1e-9`` / #genuine.
- Identification ``id_tpr_fpr_1e-3``: each probe p that has another image of its identity
  searches the gallery G ∪ (P \\ {p}); it is a true positive iff its best same-identity score
  is strictly above its best impostor score (a tie is a miss) and above ``t_1e-3``. The rate
  is over those searches (a probe without a mate cannot be found, so is not a search).
- Scores are float32; a tie is what float32 matmuls compute as one.

Both thresholds are exact: ``t_1e-9`` from a running top-k, ``t_1e-3`` (k ~ 4.7e8) from
:class:`~arcflow.evaluate.topk.KthLargest`, which needs a second pass over the impostor scores
only if its candidates outgrow ``max_buffer``. Scores are computed in tiles of ``block`` scores
(``chunk`` gallery rows wide) with torch on ``device``: the same code runs on CUDA and CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from arcflow.errors import DataFormatError
from arcflow.evaluate.megaface import check_unit, full_fp32, probe_inputs, scores_into
from arcflow.evaluate.result import BenchmarkResult, rate_key
from arcflow.evaluate.topk import KthLargest, TopK, impostors_above, low_far_roc, row_max
from arcflow.progress import progress

# ------------------------------------------------------------------------------ inputs


def split_rows(names: Sequence[str], probe_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the merged file: the probes (in ``probe_names`` order) and the rest, ascending."""
    row = {name: i for i, name in enumerate(names)}
    if len(row) != len(names):
        raise DataFormatError("the file list names an image twice")
    missing = [name for name in probe_names if name not in row]
    if missing:
        raise DataFormatError(f"{len(missing)} probes are not in the file list, e.g. {missing[0]}")
    probes = np.fromiter((row[name] for name in probe_names), np.int64, len(probe_names))
    rest = np.ones(len(names), bool)
    rest[probes] = False
    return probes, np.flatnonzero(rest)


def _take(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]``, a view when the rows are one ascending run (no copy of a memmap)."""
    if rows.size and rows[-1] - rows[0] + 1 == rows.size and np.all(np.diff(rows) == 1):
        return features[rows[0] : rows[-1] + 1]
    return features[rows]


def split_merged(
    features: np.ndarray, names: Sequence[str], probe_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Probe rows (``probe_names`` order) and distractor rows (the rest) of the merged file."""
    if len(features) != len(names):
        raise DataFormatError(f"{len(features)} feature rows for {len(names)} listed images")
    probes, rest = split_rows(names, probe_names)
    return _take(features, probes), _take(features, rest)


def folder_labels(names: Sequence[str]) -> np.ndarray:
    """Each image's identity: its folder (``lfw/Aaron_Eckhart/1.jpg`` -> ``lfw/Aaron_Eckhart``)."""
    return np.array([name.rsplit("/", 1)[0] if "/" in name else "" for name in names])


# ------------------------------------------------------------------------------- tiles


@dataclass
class _Tile:
    """Scores of probe rows ``rows`` x gallery ``cols`` (``cols`` None: distractors); for probe
    tiles, the masks of impostor and genuine pairs (None: every pair is an impostor)."""

    scores: torch.Tensor
    rows: slice
    cols: slice | None
    impostor: torch.Tensor | None = None
    genuine: torch.Tensor | None = None

    def impostors(self) -> torch.Tensor:
        return self.scores if self.impostor is None else self.scores[self.impostor]


def _tiles(
    probes: torch.Tensor,
    codes: torch.Tensor,
    distractors: np.ndarray,
    chunk: int,
    rows: int,
    check: bool,
    bar,
) -> Iterator[_Tile]:
    """Every probe x distractor tile, then the probe x probe tiles above the diagonal; each
    tile's scores live in one reused buffer, valid until the next tile."""
    n, device = len(probes), probes.device
    out = torch.empty(min(rows, n) * chunk, device=device)
    for c0 in range(0, len(distractors), chunk):
        cols = distractors[c0 : c0 + chunk]
        block = torch.from_numpy(np.array(cols, dtype=np.float32)).to(device)
        if check:
            check_unit(block, "distractor_feats", c0)
        for r0 in range(0, n, rows):
            scores = scores_into(out, probes[r0 : r0 + rows], block)
            yield _Tile(scores, slice(r0, r0 + rows), None)
        bar.update(len(cols))
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        for r0 in range(0, c1 - 1, rows):
            r1 = min(r0 + rows, n)
            scores = scores_into(out, probes[r0:r1], probes[c0:c1])
            tile = _Tile(scores, slice(r0, r1), slice(c0, c1))
            if r1 > c0 or codes[r1 - 1] == codes[c0]:  # crosses the diagonal or an identity
                i = torch.arange(r0, r1, device=device)[:, None]
                j = torch.arange(c0, c1, device=device)[None, :]
                upper = j > i
                same = codes[r0:r1, None] == codes[None, c0:c1]
                tile.impostor, tile.genuine = upper & ~same, upper & same
            yield tile
        bar.update(c1 - c0)


def _fold_max(best: torch.Tensor, tile: _Tile, mask: torch.Tensor | None) -> None:
    """Raise each probe's best score of the pairs in ``mask`` (None: all) of the tile."""
    scores = tile.scores if mask is None else tile.scores.masked_fill(~mask, -torch.inf)
    torch.maximum(best[tile.rows], row_max(scores), out=best[tile.rows])
    if tile.cols is not None:
        torch.maximum(best[tile.cols], row_max(scores.T), out=best[tile.cols])


# -------------------------------------------------------------------------- evaluation


@dataclass
class _Tally:
    """What the first pass keeps: both thresholds' selectors, each probe's best impostor and
    best same-identity score, and every genuine score."""

    kth: KthLargest  # t_id
    top: TopK  # t_ver and the ROC's end
    best_imp: torch.Tensor
    best_gen: torch.Tensor
    genuine: list[torch.Tensor]

    def add(self, tile: _Tile) -> None:
        impostors = tile.impostors()
        candidates = self.kth.update(impostors)
        # the top-k needs no value below the k-th largest's floor when its k is smaller
        self.top.update(candidates if self.top.k <= self.kth.k else impostors)
        _fold_max(self.best_imp, tile, tile.impostor)
        if tile.genuine is not None:
            self.genuine.append(tile.scores[tile.genuine])
            _fold_max(self.best_gen, tile, tile.genuine)


def _sorted_probes(
    probe_feats: np.ndarray, probe_ids: np.ndarray | Sequence[str | int], distractors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Checked probe features and identity codes, sorted by identity (so that few tiles hold
    same-identity pairs)."""
    feats, codes = probe_inputs(probe_feats, probe_ids, distractors)
    order = np.argsort(codes, kind="stable")
    return feats[order], codes[order]


def evaluate_trillion(
    probe_feats: np.ndarray,
    probe_ids: np.ndarray | Sequence[str | int],
    distractor_feats: np.ndarray,
    *,
    ver_fpr: float = 1e-9,
    id_fpr: float = 1e-3,
    roc_fraction: float = 1e-6,
    device: str | torch.device = "cpu",
    chunk: int = 8192,
    block: int = 1 << 24,
    max_buffer: int = 1 << 26,
    quiet: bool = False,
) -> BenchmarkResult:
    """Trillion-Pairs metrics (see the module docstring) and the ROC's highest-``roc_fraction``
    end. ``distractor_feats`` may be a memmap (read ``chunk`` rows at a time); ``block`` bounds
    the scores of one tile; ``max_buffer`` the candidates kept for a one-pass ``t_1e-3`` (the
    full set needs ~5e8: on an H200 e.g. ``chunk=65536, block=1 << 28, max_buffer=1 << 30``)."""
    device = torch.device(device)
    feats, codes_np = _sorted_probes(probe_feats, probe_ids, distractor_feats)
    probes, codes = torch.from_numpy(feats).to(device), torch.from_numpy(codes_np).to(device)
    counts = np.bincount(codes_np).astype(np.int64)
    n, g = len(feats), len(distractor_feats)
    n_gen = int((counts * (counts - 1) // 2).sum())
    n_imp = (n * n - int((counts * counts).sum())) // 2 + n * g
    if not n_gen:
        raise ValueError("Trillion-Pairs needs an identity with at least two probe images")
    k_ver = impostors_above(ver_fpr, n_imp) + 1
    tally = _Tally(
        KthLargest(impostors_above(id_fpr, n_imp) + 1, device=device, max_buffer=max_buffer),
        TopK(max(k_ver, impostors_above(roc_fraction, n_imp) + 1), device=device),
        torch.full((n,), -torch.inf, device=device),
        torch.full((n,), -torch.inf, device=device),
        [],
    )
    rows = max(1, block // chunk)
    with full_fp32(), progress(total=g + n, desc="trillion", unit="img", hide=quiet) as bar:
        for tile in _tiles(probes, codes, distractor_feats, chunk, rows, True, bar):
            tally.add(tile)
        tally.kth.end_pass()
        if not tally.kth.done:  # the t_1e-3 candidates did not fit: count them again
            bar.reset()
            for tile in _tiles(probes, codes, distractor_feats, chunk, rows, False, bar):
                tally.kth.update(tile.impostors())
            tally.kth.end_pass()

    gen = torch.cat(tally.genuine)
    assert gen.numel() == n_gen and tally.kth.seen == n_imp, "tiles missed pairs"
    t_ver, t_id = tally.top.kth(k_ver), tally.kth.value
    mated = torch.from_numpy(counts[codes_np] > 1).to(device)
    found = (tally.best_gen > tally.best_imp) & (tally.best_gen > t_id) & mated
    metrics = {
        rate_key("ver_tpr_fpr", ver_fpr): float((gen > t_ver).double().mean()),
        rate_key("id_tpr_fpr", id_fpr): float(found.sum()) / int(mated.sum()),
    }
    top = tally.top.values().cpu().numpy()
    roc = low_far_roc(gen.cpu().numpy(), top, n_imp, complete=n_imp <= tally.top.k)
    details = {
        "n_probes": n,
        "n_identities": len(counts),
        "n_distractors": g,
        "n_genuine": n_gen,
        "n_impostor": n_imp,
        "n_searches": int(mated.sum()),
        "ver_threshold": t_ver,
        "id_threshold": t_id,
        "passes": tally.kth.passes,
    }
    return BenchmarkResult(metrics, roc, details)
