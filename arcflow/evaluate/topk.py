"""Exact streaming selection of the highest scores of score sets too big to hold.

Large benchmarks (MegaFace: 3.5e9 impostor pairs, Trillion-Pairs: 4.7e11) compute scores one
chunk at a time; the operating threshold at a false-accept rate needs only the highest ones.
Both selectors take torch tensors on any device (the same code runs on CUDA and CPU) and are
exact for any data, ties included:

- :class:`TopK` keeps the ``k`` highest values (memory O(k)): a candidate buffer plus a floor,
  the k-th highest value seen so far; a new value can only enter if it is above the floor, and
  the buffer is cut back to k (``torch.topk``, ``np.partition`` on the CPU) when it holds 2k.
- :class:`KthLargest` finds only the k-th highest value, for k too large to hold (e.g. 4.7e8
  at FPR 1e-3 of 4.7e11 pairs), by radix selection on the float32 bit patterns: pass 1 counts
  values by their top 16 bits (65,536 bins, an order-preserving key), which finds the bin
  holding rank k; pass 2 counts the low 16 bits of the values in that bin, which gives the
  exact value. Pass 1 also keeps every value at or above the running floor (the bin of rank k
  among the values seen so far) while they fit in ``max_buffer``; then no second pass is needed.

Thresholds follow one rule (:func:`impostors_above`): at a rate ``r`` over ``n`` impostors,
``m = floor(r * n)`` impostors may score above the threshold, so the threshold is the
``(m + 1)``-th highest impostor score and a pair is accepted iff its score is strictly above it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

_BITS = 16
_BINS = 1 << _BITS
_LOW = _BINS - 1
_SIGN = 1 << 31


def impostors_above(rate: float, n: int) -> int:
    """``floor(rate * n)``, ``rate`` read as the decimal it prints as (1e-6 is 1/10^6 exactly)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], not {rate}")
    return math.floor(Fraction(repr(float(rate))) * n)


# ------------------------------------------------------------------------- float keys


def float_keys(x: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 keys in [0, 2^32) of float32 values (-0.0 is keyed as +0.0)."""
    bits = (x.to(torch.float32) + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits + _SIGN, -1 - bits)


def key_value(key: int) -> float:
    """The float32 value whose :func:`float_keys` key is ``key``."""
    bits = key - _SIGN if key >= _SIGN else -1 - key
    return float(np.array([bits], dtype=np.int32).view(np.float32)[0])


def _bin_edges(b: int) -> tuple[float, float]:
    """Smallest and largest value of top-bits bin ``b`` (NaN ends read as -inf / +inf)."""
    lo, hi = key_value(b << _BITS), key_value((b << _BITS) | _LOW)
    return (-math.inf if math.isnan(lo) else lo), (math.inf if math.isnan(hi) else hi)


def _rank_bin(counts: torch.Tensor, k: int) -> tuple[int, int] | None:
    """The bin holding the k-th highest value and how many values lie in higher bins."""
    above = counts.flip(0).cumsum(0)
    if int(above[-1]) < k:
        return None
    i = int(torch.searchsorted(above, torch.tensor([k], device=above.device)).item())
    higher = int(above[i - 1]) if i else 0
    return _BINS - 1 - i, higher


def on_host(x: torch.Tensor) -> bool:
    """Whether NumPy may do the work on ``x``: on the CPU its boolean indexing, reductions and
    partition are several times faster than torch's (and free of OpenMP waits)."""
    return x.device.type == "cpu" and not x.requires_grad


def above(x: torch.Tensor, floor: float, *, strict: bool = True) -> torch.Tensor:
    """The values of ``x`` above ``floor`` (``>=`` unless ``strict``), flattened."""
    if on_host(x):
        a = x.numpy()
        return torch.from_numpy(a[a > floor] if strict else a[a >= floor])
    return x[x > floor] if strict else x[x >= floor]


def row_max(x: torch.Tensor) -> torch.Tensor:
    """Each row's maximum of a 2-D tensor."""
    if on_host(x) and x.shape[1]:
        return torch.from_numpy(x.numpy().max(axis=1))
    return x.amax(dim=1)


def largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest values of a 1-D tensor, in no order."""
    if on_host(x):
        a = x.numpy()
        return torch.from_numpy(np.partition(a, a.size - k)[a.size - k :])
    return torch.topk(x, k, sorted=False).values


# ------------------------------------------------------------------------------ top-k


class TopK:
    """The ``k`` highest values of a stream of score chunks, exact (ties kept as a multiset)."""

    def __init__(self, k: int, *, device: str | torch.device = "cpu") -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        self.k = k
        self.device = torch.device(device)
        self.seen = 0
        self.floor = -math.inf  # every value that can still enter is > floor
        self._parts: list[torch.Tensor] = []
        self._held = 0

    def update(self, scores: torch.Tensor, row_maxima: torch.Tensor | None = None) -> None:
        """Add a chunk of scores (any shape). For a 2-D chunk, ``row_maxima`` (if at hand) lets
        the search skip the rows that cannot enter."""
        self.seen += scores.numel()
        if row_maxima is not None and self.floor > -math.inf:
            rows = row_maxima > self.floor
            hits = int(rows.sum())
            if not hits:
                return
            if 2 * hits < rows.numel():
                scores = scores[rows]
        if self.floor > -math.inf:
            x = above(scores, self.floor)
        else:  # a copy: the caller may reuse the chunk's memory
            x = scores.reshape(-1)
            x = x.clone() if x.numel() <= self.k else x
        if x.numel() > self.k:
            x = largest(x, self.k)
        if not x.numel():
            return
        self._parts.append(x.to(self.device, torch.float32))
        self._held += x.numel()
        if self._held >= 2 * self.k or (self.floor == -math.inf and self._held >= self.k):
            self._compact()

    def _compact(self) -> None:
        held = torch.cat(self._parts)
        if held.numel() > self.k:
            held = largest(held, self.k)
        self._parts, self._held = [held], held.numel()
        if self._held == self.k:
            self.floor = float(held.min())

    def values(self) -> torch.Tensor:
        """The highest ``min(k, seen)`` values, descending."""
        if not self._parts:
            return torch.empty(0, device=self.device)
        held = torch.cat(self._parts)
        return torch.topk(held, min(self.k, held.numel()), sorted=True).values

    def kth(self, k: int | None = None) -> float:
        """The k-th highest value (default: this selector's k); -inf if fewer were seen."""
        k = self.k if k is None else k
        if not 1 <= k <= self.k:
            raise ValueError(f"k must be in [1, {self.k}], not {k}")
        top = self.values()
        return float(top[k - 1]) if top.numel() >= k else -math.inf


# ------------------------------------------------------------------------- k-th largest


class KthLargest:
    """The exact k-th highest value of a stream, in one or two passes over the same chunks.

    Feed every chunk to :meth:`update`, call :meth:`end_pass`; while :attr:`done` is false,
    feed the very same chunks again (any order)::

        sel = KthLargest(k)
        while not sel.done:
            for scores in chunks():
                sel.update(scores)
            sel.end_pass()
        threshold = sel.value

    Memory: two 65,536-bin histograms plus at most ``max_buffer`` float32 candidates.
    """

    def __init__(
        self, k: int, *, device: str | torch.device = "cpu", max_buffer: int = 1 << 26
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        self.k = k
        self.device = torch.device(device)
        self.max_buffer = max_buffer
        self.seen = 0
        self.passes = 1
        self.floor = -math.inf  # pass 1: values below it cannot be the k-th highest
        self._counts = torch.zeros(_BINS, dtype=torch.int64, device=self.device)
        self._buffer: list[torch.Tensor] | None = [] if max_buffer > 0 else None
        self._held = 0
        self._bin: tuple[int, int] | None = None  # pass 2: (bin, values in higher bins)
        self._seen2 = 0
        self._expected = 0
        self._value: float | None = None

    @property
    def done(self) -> bool:
        return self._value is not None

    @property
    def value(self) -> float:
        """The k-th highest value (-inf if fewer than k values were seen)."""
        if self._value is None:
            raise RuntimeError("KthLargest: the selection needs another pass over the scores")
        return self._value

    def update(self, scores: torch.Tensor) -> torch.Tensor:
        """Count a chunk; in pass 1 returns the values at or above the floor (a superset of
        every value that can be among the k highest, for chaining a smaller :class:`TopK`)."""
        x = scores.reshape(-1)
        if self._value is not None:
            raise RuntimeError("KthLargest: already done")
        if self._bin is not None:
            self._seen2 += x.numel()
            self._count_low(x)
            return x[:0]
        self.seen += x.numel()
        # a copy either way: the caller may reuse the chunk's memory
        x = above(x, self.floor, strict=False) if self.floor > -math.inf else x.clone()
        if x.numel():
            keys = float_keys(x)
            self._counts += torch.bincount(keys >> _BITS, minlength=_BINS)
            self._keep(x)
        return x

    def _keep(self, x: torch.Tensor) -> None:
        """Raise the floor; keep the candidates while they fit."""
        found = _rank_bin(self._counts, self.k)
        if found is not None and found[0] > 0:
            self._counts[: found[0]] = 0
            self.floor = _bin_edges(found[0])[0]
        if self._buffer is None:
            return
        self._buffer.append(x.to(self.device, torch.float32))
        self._held += x.numel()
        if self._held > self.max_buffer:
            held = above(torch.cat(self._buffer), self.floor, strict=False)
            self._buffer, self._held = [held], held.numel()
            if self._held > self.max_buffer:
                self._buffer, self._held = None, 0

    def _count_low(self, x: torch.Tensor) -> None:
        assert self._bin is not None
        lo, hi = _bin_edges(self._bin[0])
        x = above(x, lo, strict=False)
        keys = float_keys(x[x <= hi])
        keys = keys[(keys >> _BITS) == self._bin[0]]
        self._counts += torch.bincount(keys & _LOW, minlength=_BINS)

    def end_pass(self) -> None:
        """Finish a pass: the value is known, or the next pass is set up."""
        if self._bin is None:
            self._end_first()
        else:
            self._end_second()

    def _end_first(self) -> None:
        found = _rank_bin(self._counts, self.k)
        if found is None:
            self._value = -math.inf
            return
        self._bin = found
        expected = int(self._counts[found[0]])
        self._counts = torch.zeros(_BINS, dtype=torch.int64, device=self.device)
        if self._buffer is not None:
            self._count_low(torch.cat([*self._buffer, torch.empty(0, device=self.device)]))
            self._buffer = None
            self._check_and_pick(expected)
        else:
            self._expected = expected
            self.passes = 2

    def _end_second(self) -> None:
        if self._seen2 != self.seen:
            raise RuntimeError(f"KthLargest: pass 2 saw {self._seen2} values, pass 1 {self.seen}")
        self._check_and_pick(self._expected)

    def _check_and_pick(self, expected: int) -> None:
        assert self._bin is not None
        b, higher = self._bin
        if int(self._counts.sum()) != expected:
            raise RuntimeError("KthLargest: the passes saw different scores")
        low, _ = _rank_bin(self._counts, self.k - higher) or (0, 0)
        self._value = key_value((b << _BITS) | low)


# --------------------------------------------------------------------------------- ROC


def low_far_roc(
    genuine: np.ndarray,
    top_impostors: np.ndarray,
    n_impostor: int,
    *,
    complete: bool = False,
    max_points: int = 2000,
) -> tuple[np.ndarray, np.ndarray]:
    """The low-FPR end of the ROC from every genuine score and the highest impostor scores.

    A point per distinct threshold ``t`` (accept iff score >= t): ``fpr = #impostors >= t /
    n_impostor``, ``tpr = #genuine >= t / #genuine``, starting at (0, 0). Only thresholds above
    the lowest held impostor are exact (ties may continue below the held ones), so only those
    are used unless ``complete`` (every impostor is held). Ascending in FPR, thinned to about
    ``max_points`` exact points on a log-spaced FPR grid (the highest TPR at each grid FPR).
    """
    gen = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    imp = np.sort(np.asarray(top_impostors, dtype=np.float64).ravel())
    if not gen.size or n_impostor < 1:
        raise ValueError("a ROC needs genuine scores and at least one impostor")
    floor = -np.inf if complete or not imp.size else imp[0]
    t = np.unique(np.concatenate([gen, imp]))[::-1]
    t = t[t > floor]
    fpr = (imp.size - np.searchsorted(imp, t, side="left")) / n_impostor
    tpr = (gen.size - np.searchsorted(gen, t, side="left")) / gen.size
    fpr, tpr = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])
    if fpr.size > max_points and fpr[-1] > 0:
        grid = np.geomspace(1.0 / n_impostor, fpr[-1], max_points)
        keep = np.searchsorted(fpr, grid, side="right") - 1
        keep = np.unique(np.concatenate([[0, fpr.size - 1], keep[keep >= 0]]))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr
