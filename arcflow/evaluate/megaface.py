"""MegaFace Challenge 1: rank-1 identification among 10 to 1M distractors, TAR@FAR=1e-6.

Scores are dot products of L2-normalised features (checked to 1e-3); on unit vectors they rank
pairs exactly as the devkit's L2 distances do.

- Identification (devkit protocol): for every FaceScrub identity and ordered pair of its images
  ``i != j``, image ``i`` joins the gallery with the distractors of one list size and ``j`` is
  the probe. It is correct at rank 1 iff ``s(i, j) >= s(d, j)`` for every distractor ``d``
  (a tie is a hit: the devkit counts a probe correct at rank N when its mated score is at least
  its N-th best distractor score). ``rank1_<size>`` = correct / ordered pairs, for every list
  given; ``rank1`` is the largest. Lists need not be nested: distractors are grouped by
  their membership over the lists and one pass keeps a running max per (probe, group).
  Float32 matmuls round differently with the shape, so a decision within rounding of a tie
  (``|s(i, j) - max| <= 2 * d * 2^-23``) is redone with exact dot products (a small second pass
  over the distractors finds the rivals): a distractor that duplicates the gallery image ties,
  so the pair is a hit, whatever the chunking or device.
- Verification: genuine = unordered same-identity FaceScrub pairs; impostors = every FaceScrub
  image x every distractor of the largest list. With ``m = floor(FAR * n_impostor)``, the
  threshold is the ``(m + 1)``-th highest impostor score (so at most m impostors are above it)
  and ``tar_far_<FAR>`` = #genuine above it / #genuine (float32 scores). The ROC covers the highest
  ``roc_fraction`` of the impostors, exactly (:func:`arcflow.evaluate.topk.low_far_roc`).
- Refined (insightface ``remove_noises``, keys prefixed ``refined_``): noisy distractors score
  -inf against everything (insightface puts 100 in a 513th dimension, so their L2 distance is
  huge) and still count as impostors; each noisy FaceScrub image is replaced by its identity's
  centre (the *sum* of its clean features, as insightface) plus U(-0.001, 0.001) noise,
  re-normalised. Either noise list may be absent: only what the given ones name is removed.

The distractor matrix (e.g. a 2 GB memmap) is read ``chunk`` rows at a time; the probe x chunk
scores feed the per-group maxima and the impostor top-k in the same pass, on ``device``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arcflow.data.protocols.megaface import (
    NoiseList,
    feature_file,
    read_features,
    write_feature,
)
from arcflow.errors import DataFormatError
from arcflow.evaluate.result import BenchmarkResult, rate_key
from arcflow.evaluate.topk import TopK, impostors_above, low_far_roc, row_max
from arcflow.progress import progress

UNIT_TOLERANCE = 1e-3
NOISE = 0.001

# ------------------------------------------------------------------------------ devkit


def write_devkit_features(
    root: str | Path, paths: Sequence[str], feats: np.ndarray, ending: str
) -> None:
    """One devkit feature file per image, ``root/<path><ending>`` (d x 1 float32, insightface)."""
    if len(paths) != len(feats):
        raise ValueError(f"{len(paths)} paths for {len(feats)} features")
    for path, feat in zip(paths, feats, strict=True):
        write_feature(feature_file(root, path, ending), np.asarray(feat).reshape(-1))


def read_devkit_features(root: str | Path, paths: Sequence[str], ending: str) -> np.ndarray:
    """The devkit feature files of ``paths`` as an (N, d) float32 array."""
    return read_features([feature_file(root, path, ending) for path in paths])


def list_indices(paths: Sequence[str], lists: Mapping[int, Sequence[str]]) -> dict[int, np.ndarray]:
    """Each devkit distractor list (size -> its paths) as row indices into ``paths``."""
    row = {path: i for i, path in enumerate(paths)}
    out = {}
    for size, members in lists.items():
        missing = [p for p in members if p not in row]
        if missing:
            raise DataFormatError(
                f"distractor list {size}: {len(missing)} paths have no feature, e.g. {missing[0]}"
            )
        out[size] = np.fromiter((row[p] for p in members), np.int64, len(members))
    return out


def noise_mask(paths: Sequence[str], noise: NoiseList | Iterable[str]) -> np.ndarray:
    """Which of ``paths`` a noise list names: by relative path, or by file name when a noise
    entry has no folder (FaceScrub's list)."""
    names = noise.paths if isinstance(noise, NoiseList) else tuple(noise)
    full = {n for n in names if "/" in n}
    bare = {n for n in names if "/" not in n}
    return np.fromiter((p in full or p.rsplit("/", 1)[-1] in bare for p in paths), bool, len(paths))


# ---------------------------------------------------------------------------- refined


def remove_probe_noise(
    feats: np.ndarray, ids: np.ndarray, noisy: np.ndarray, *, seed: int = 0
) -> np.ndarray:
    """insightface ``remove_noises`` for FaceScrub: each noisy row becomes its identity's centre
    (the sum of its clean rows, in float64) + U(-0.001, 0.001), re-normalised.

    insightface sums, so the noise is 1/n of what it would be on the mean of n clean rows: the
    result is ``normalize(mean + u / n)``. The noise is one ``Generator.uniform`` draw of shape
    (#noisy, d) from ``default_rng(seed)``, in row order."""
    feats = np.asarray(feats, dtype=np.float32)
    noisy = _as_mask(noisy, len(feats), "noisy probes")
    codes = np.unique(np.asarray(ids), return_inverse=True)[1].ravel()
    out = feats.copy()
    rows = np.flatnonzero(noisy)
    if not rows.size:
        return out
    clean = ~noisy
    sums = np.zeros((codes.max() + 1, feats.shape[1]))
    np.add.at(sums, codes[clean], feats[clean].astype(np.float64))
    counts = np.bincount(codes[clean], minlength=len(sums))
    empty = rows[counts[codes[rows]] == 0]
    if empty.size:
        raise ValueError(f"probe {empty[0]} is noisy and its identity has no clean image")
    centre = sums[codes[rows]]
    noise = np.random.default_rng(seed).uniform(-NOISE, NOISE, size=centre.shape)
    g = centre + noise
    out[rows] = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    return out


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Groups:
    """Distractor columns grouped by list membership (bit i: list sizes[i]; last bit: noisy)."""

    sizes: tuple[int, ...]
    codes: tuple[int, ...]
    columns: tuple[np.ndarray, ...]

    def select(self, size: int, *, clean: bool) -> list[int]:
        bit = 1 << self.sizes.index(size)
        noisy = 1 << len(self.sizes)
        return [g for g, c in enumerate(self.codes) if c & bit and not (clean and c & noisy)]


def _as_mask(x: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """A bool mask over n rows from a mask or an index array (None: nothing)."""
    if x is None:
        return np.zeros(n, bool)
    x = np.asarray(x)
    if x.dtype == bool:
        if x.shape != (n,):
            raise ValueError(f"{what}: a mask of {x.shape} for {n} rows")
        return x
    mask = np.zeros(n, bool)
    if x.size and (x.min() < 0 or x.max() >= n):
        raise ValueError(f"{what}: indices must be in [0, {n})")
    mask[x.astype(np.int64)] = True
    return mask


def _group(lists: Mapping[int, np.ndarray], n: int, noisy: np.ndarray) -> _Groups:
    sizes = tuple(sorted(lists))
    code = np.zeros(n, np.int64)
    for i, size in enumerate(sizes):
        idx = np.asarray(lists[size], dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"list {size}: indices must be in [0, {n})")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"list {size}: repeated distractor indices")
        code[idx] |= 1 << i
    code[noisy & (code > 0)] |= 1 << len(sizes)
    used = np.flatnonzero(code)
    order = used[np.argsort(code[used], kind="stable")]
    values, starts = np.unique(code[order], return_index=True)
    columns = tuple(np.split(order, starts[1:]))
    return _Groups(sizes, tuple(int(v) for v in values), columns)


def check_unit(x: torch.Tensor, what: str, rows: np.ndarray | int = 0) -> None:
    """Raise ValueError unless every row is finite with L2 norm 1 (within 1e-3); ``rows``: the
    row numbers of ``x`` to name (an array, or the first row's number)."""
    norms = x.norm(dim=1).cpu().numpy()
    bad = np.flatnonzero(~(np.abs(norms - 1) <= UNIT_TOLERANCE))
    if bad.size:
        i = int(bad[0])
        row = int(rows[i]) if isinstance(rows, np.ndarray) else rows + i
        raise ValueError(f"{what} row {row} is not an L2-normalised finite feature")


def probe_inputs(
    probe_feats: np.ndarray,
    probe_ids: np.ndarray | Sequence[str | int],
    distractor_feats: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Checked probe features (float32, unit rows, as wide as ``distractor_feats``) and their
    identity codes (0..n_ids-1)."""
    probes = np.asarray(probe_feats, dtype=np.float32)
    codes = np.unique(np.asarray(probe_ids), return_inverse=True)[1].ravel()
    if probes.ndim != 2 or codes.size != len(probes):
        raise ValueError(f"probe_feats {probes.shape} and probe_ids ({codes.size}) disagree")
    if np.ndim(distractor_feats) != 2 or distractor_feats.shape[1] != probes.shape[1]:
        raise ValueError(f"distractor_feats {np.shape(distractor_feats)} vs probes {probes.shape}")
    check_unit(torch.from_numpy(probes), "probe_feats")
    return probes, codes


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Full float32 matmuls (no TF32 / reduced precision) inside, whatever the global setting."""
    precision, tf32 = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cuda.matmul.allow_tf32 = tf32


def scores_into(buffer: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` written into the front of a reused flat ``buffer`` (a fresh 10-100 MB result
    per chunk fragments the heap until the process holds gigabytes it does not use)."""
    return torch.mm(a, b.T, out=buffer[: len(a) * len(b)].view(len(a), len(b)))


def _chunk_rows(feats: np.ndarray, cols: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows ``cols`` of a (memmapped) float matrix as float32 on ``device``."""
    if cols[-1] - cols[0] + 1 == cols.size and np.all(np.diff(cols) == 1):
        block = feats[cols[0] : cols[-1] + 1]
    else:
        block = feats[cols]
    return torch.from_numpy(np.array(block, dtype=np.float32)).to(device)


def _identities(codes: np.ndarray) -> list[np.ndarray]:
    """The rows of each identity that has at least two images."""
    groups = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    return [rows for rows in groups if rows.size > 1]


def _mated(
    matrix: torch.Tensor, rows: torch.Tensor, identities: list[np.ndarray]
) -> tuple[np.ndarray, torch.Tensor]:
    """Every ordered same-identity pair (gallery i, probe j) of probes as a (2, n) array, and
    its score; the probes' features are ``matrix[rows]``."""
    feats = matrix[rows]
    pairs, scores = [], []
    for members in identities:
        i, j = np.nonzero(~np.eye(members.size, dtype=bool))
        block = feats[torch.from_numpy(members).to(feats.device)]
        gram = block @ block.T
        pairs.append(np.stack([members[i], members[j]]))
        scores.append(gram[torch.from_numpy(i), torch.from_numpy(j)])
    return np.concatenate(pairs, axis=1), torch.cat(scores)


@dataclass
class _Variant:
    """One way of scoring: which probe-matrix rows are its probes, which groups it sees."""

    prefix: str
    runs: list[slice]  # its probes: these runs of probe-matrix rows, in (internal) probe order
    clean: bool  # noisy distractors score -inf
    top: TopK


def evaluate_megaface(
    probe_feats: np.ndarray,
    probe_ids: np.ndarray | Sequence[str | int],
    distractor_feats: np.ndarray,
    lists: Mapping[int, np.ndarray],
    *,
    noisy_probes: np.ndarray | None = None,
    noisy_distractors: np.ndarray | None = None,
    far: float = 1e-6,
    roc_fraction: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    chunk: int = 2048,
    quiet: bool = False,
) -> BenchmarkResult:
    """MegaFace Challenge 1 metrics (see the module docstring).

    ``lists``: list size -> row indices into ``distractor_feats``. ``noisy_*``: bool masks or
    row indices (e.g. :func:`noise_mask`); when either is given the refined metrics are added.
    ``seed`` drives the refined probes' noise. The ROC is the original variant's.
    """
    device = torch.device(device)
    if not lists:
        raise ValueError("no distractor list")
    probes, codes = probe_inputs(probe_feats, probe_ids, distractor_feats)
    noisy_d = _as_mask(noisy_distractors, len(distractor_feats), "noisy_distractors")
    groups = _group(lists, len(distractor_feats), noisy_d)
    largest = max(lists)
    n_imp = len(probes) * len(lists[largest])
    # clean probes first (stable), so that each variant's probes are two runs of matrix rows
    noisy_p = _as_mask(noisy_probes, len(probes), "noisy_probes")
    order = np.argsort(noisy_p, kind="stable")
    probes, codes, noisy_p = probes[order], codes[order], noisy_p[order]
    identities = _identities(codes)
    if not identities:
        raise ValueError("MegaFace needs an identity with at least two probe images")
    k = max(impostors_above(far, n_imp), impostors_above(roc_fraction, n_imp)) + 1
    refined = noisy_probes is not None or noisy_distractors is not None
    matrix, variants = _variants(probes, codes, noisy_p, refined, seed, k, device)

    with full_fp32():
        maxima = _scan(matrix, distractor_feats, groups, largest, variants, device, chunk, quiet)
        mated = [_mated(matrix, _rows(v, device), identities) for v in variants]
    ranks, near = _rank1(variants, matrix, mated, maxima, groups, distractor_feats, chunk)
    metrics = {**ranks}
    details: dict[str, float | int | str] = {"n_near_ties": near}
    roc = None
    m = impostors_above(far, n_imp)
    for v, (pairs, scores) in zip(variants, mated, strict=True):
        metrics[f"{v.prefix}rank1"] = metrics[f"{v.prefix}rank1_{largest}"]
        genuine = scores[torch.from_numpy(pairs[0] < pairs[1]).to(device)].cpu().numpy()
        threshold = v.top.kth(m + 1)
        metrics[f"{v.prefix}{rate_key('tar_far', far)}"] = float(np.mean(genuine > threshold))
        details[f"{v.prefix}threshold"] = threshold
        if roc is None:
            top = v.top.values().cpu().numpy()
            roc = low_far_roc(genuine, top, n_imp, complete=v.top.seen <= v.top.k)
    details.update(
        n_probes=len(probes),
        n_identities=int(codes.max()) + 1,
        n_rank1_pairs=int(mated[0][0].shape[1]),
        n_genuine=int(mated[0][0].shape[1]) // 2,
        n_impostor=n_imp,
        n_noisy_probes=int(noisy_p.sum()),
        n_noisy_distractors=int(noisy_d[lists[largest]].sum()),
    )
    return BenchmarkResult(metrics, roc, details)


def _variants(
    probes: np.ndarray,
    codes: np.ndarray,
    noisy: np.ndarray,
    refined: bool,
    seed: int,
    k: int,
    device: torch.device,
) -> tuple[torch.Tensor, list[_Variant]]:
    """The probe matrix (every probe, then the refined replacements of the noisy ones, which
    come last) and the variants scored from it."""
    matrix = torch.from_numpy(probes).to(device)
    n, n_clean = len(probes), int((~noisy).sum())
    variants = [_Variant("", [slice(0, n)], False, TopK(k, device=device))]
    if refined:
        fixed = remove_probe_noise(probes, codes, noisy, seed=seed)[n_clean:]
        matrix = torch.cat([matrix, torch.from_numpy(fixed).to(device)])
        runs = [slice(0, n_clean), slice(n, len(matrix))]
        variants.append(_Variant("refined_", runs, True, TopK(k, device=device)))
    return matrix, variants


def _scan(
    matrix: torch.Tensor,
    distractors: np.ndarray,
    groups: _Groups,
    largest: int,
    variants: list[_Variant],
    device: torch.device,
    chunk: int,
    quiet: bool,
) -> torch.Tensor:
    """One pass over the distractors: per (probe row, group) maxima; impostors to each top-k."""
    maxima = torch.full((len(matrix), len(groups.codes)), -torch.inf, device=device)
    largest_bit = 1 << groups.sizes.index(largest)
    noisy_bit = 1 << len(groups.sizes)
    total = sum(c.size for c in groups.columns)
    out = torch.empty(len(matrix) * min(chunk, total), device=device)
    with progress(total=total, desc="megaface", unit="img", hide=quiet) as bar:
        for g, (code, columns) in enumerate(zip(groups.codes, groups.columns, strict=True)):
            for start in range(0, columns.size, chunk):
                cols = columns[start : start + chunk]
                block = _chunk_rows(distractors, cols, device)
                check_unit(block, "distractor_feats", cols)
                scores = scores_into(out, matrix, block)
                best = row_max(scores)
                torch.maximum(maxima[:, g], best, out=maxima[:, g])
                if code & largest_bit:
                    for v in variants:
                        if not (v.clean and code & noisy_bit):
                            for run in v.runs:
                                v.top.update(scores[run], best[run])
                bar.update(cols.size)
    return maxima


def _rows(v: _Variant, device: torch.device) -> torch.Tensor:
    """The variant's probe-matrix rows, in probe order."""
    return torch.cat([torch.arange(r.start, r.stop, device=device) for r in v.runs])


def _rank1(
    variants: list[_Variant],
    matrix: torch.Tensor,
    mated: list[tuple[np.ndarray, torch.Tensor]],
    maxima: torch.Tensor,
    groups: _Groups,
    distractors: np.ndarray,
    chunk: int,
) -> tuple[dict[str, float], int]:
    """``rank1_<size>`` of every variant, and how many decisions were within rounding of a tie
    (those are redone exactly)."""
    band = 2 * matrix.shape[1] * 2.0**-23  # twice any float32 dot product's rounding bound
    decisions: list[_Decision] = []
    for v, (pairs, scores) in zip(variants, mated, strict=True):
        rows = _rows(v, matrix.device)
        probe = torch.from_numpy(pairs[1]).to(matrix.device)
        for size in groups.sizes:
            chosen = groups.select(size, clean=v.clean)
            best = maxima[rows][:, chosen].amax(dim=1) if chosen else None
            decisions.append(_decide(v, size, chosen, scores, probe, best, band))
    near = sum(d.near.size for d in decisions)
    if near:
        _resolve(decisions, matrix, mated[0][0], distractors, groups, band, chunk)
    return {f"{d.variant.prefix}rank1_{d.size}": float(d.hits.mean()) for d in decisions}, near


@dataclass
class _Decision:
    """Rank-1 hits of one variant at one list size, and the pairs too close to a tie to tell."""

    variant: _Variant
    size: int
    groups: list[int]
    scores: torch.Tensor  # float32 mated score of each ordered pair
    hits: np.ndarray
    near: np.ndarray


def _decide(
    v: _Variant,
    size: int,
    chosen: list[int],
    scores: torch.Tensor,
    probe: torch.Tensor,
    best: torch.Tensor | None,
    band: float,
) -> _Decision:
    """Pair (i gallery, j probe) is a hit iff its mated score is at least every distractor's
    (a tie is a hit)."""
    if best is None:
        return _Decision(v, size, chosen, scores, np.ones(scores.numel(), bool), np.empty(0, int))
    rival = best[probe]
    near = torch.nonzero((scores - rival).abs() <= band).ravel()
    return _Decision(v, size, chosen, scores, (scores >= rival).cpu().numpy(), near.cpu().numpy())


def exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    """The dot product of two float32 vectors, correctly rounded (exact products, ``fsum``)."""
    return math.fsum((a.astype(np.float64) * b.astype(np.float64)).tolist())


def _resolve(
    decisions: list[_Decision],
    matrix: torch.Tensor,
    pairs: np.ndarray,
    distractors: np.ndarray,
    groups: _Groups,
    band: float,
    chunk: int,
) -> None:
    """Redo the near-tie decisions exactly: a second pass finds, for each probe concerned, the
    distractors whose float32 score could reach its mated score; exact dot products decide
    (a tie is a hit)."""
    floors: dict[int, float] = {}
    for d in decisions:
        rows = _rows(d.variant, torch.device("cpu")).numpy()
        for p in d.near:
            j = int(rows[pairs[1, p]])
            floors[j] = min(floors.get(j, math.inf), float(d.scores[p]) - band)
    queries = np.array(sorted(floors))
    device = matrix.device
    floor = torch.tensor([floors[j] for j in queries], device=device)
    found = _candidates(
        matrix[torch.from_numpy(queries).to(device)], floor, distractors, groups, device, chunk
    )
    feats = matrix.cpu().numpy()
    where = {int(j): n for n, j in enumerate(queries)}
    for d in decisions:
        rows = _rows(d.variant, torch.device("cpu")).numpy()
        for p in d.near:
            i, j = int(rows[pairs[0, p]]), int(rows[pairs[1, p]])
            cols, grp = found[where[j]]
            rivals = cols[np.isin(grp, d.groups)]
            best = max((exact_dot(distractors[c], feats[j]) for c in rivals), default=-math.inf)
            d.hits[p] = exact_dot(feats[i], feats[j]) >= best


def _candidates(
    queries: torch.Tensor,
    floors: torch.Tensor,
    distractors: np.ndarray,
    groups: _Groups,
    device: torch.device,
    chunk: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each query row, the distractors (and their groups) scoring at least its floor."""
    hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with full_fp32():
        for g, columns in enumerate(groups.columns):
            for start in range(0, columns.size, chunk):
                cols = columns[start : start + chunk]
                scores = queries @ _chunk_rows(distractors, cols, device).T
                q, c = (t.cpu().numpy() for t in torch.nonzero(scores >= floors[:, None]).T)
                hits.append((q, cols[c], np.full(q.size, g)))
    q, cols, grp = (np.concatenate(parts) for parts in zip(*hits, strict=True))
    return [(cols[q == n], grp[q == n]) for n in range(len(queries))]
