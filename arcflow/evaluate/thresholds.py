"""Decision thresholds: the cosine above which two faces are "the same person", at a chosen FAR.

Rule (the face service applies the same): a comparison is **accepted iff** ``score >
threshold`` (strict), the score being the cosine of the two unit embeddings, clipped to
[-1, 1] (:func:`cosine_scores`, :func:`accepts`).

Calibration on a set of n impostor and g genuine comparisons, for a target FAR f: at most
``m = floor(f * n)`` impostors may be accepted (computed exactly for the decimal FAR), and the
threshold is the ``(m + 1)``-th highest impostor score. Exactly the impostors strictly above it
are accepted, so the measured FAR is the largest one any threshold can reach without passing
f (with tied impostor scores, accepted or rejected together, it can be below m / n, never
above); and no lower threshold keeps FAR <= f, so the TAR is the highest possible there.
``far_measured`` = accepted impostors / n, ``tar`` = accepted genuines / g, both exact on the
calibration scores.

A FAR is **resolved** iff the set has at least ``1 / f`` impostors (m >= 1); an unresolved FAR
is listed as such and gets no threshold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

from arcflow.errors import DataFormatError
from arcflow.evaluate.result import LEVELS, BenchmarkResult, rate_key
from arcflow.evaluate.scores import binary_labels

FORMAT_VERSION = 1
FARS: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
SCORE = "cosine"
ACCEPT = "score > threshold"
#: Calibration sets tried first, in order (IJB 1:1 template pairs); then the largest pair set.
PREFERRED = ("ijbc", "ijbb")


def far_key(far: float) -> str:
    """JSON / metric key of a FAR: ``1e-4`` -> ``far_1e-4``."""
    return rate_key("far", far)


KNOWN: dict[str, float] = {far_key(f): f for f in FARS}
T = TypeVar("T")


def max_accepted(far: float, n_impostor: int) -> int:
    """``floor(far * n_impostor)`` computed exactly (``far`` read as the decimal it prints as)."""
    return math.floor(n_impostor * Fraction(repr(float(far))))


def is_resolved(far: float, n_impostor: int) -> bool:
    """Whether ``n_impostor`` impostors resolve ``far``: at least ``1 / far`` of them."""
    return max_accepted(far, n_impostor) >= 1


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit embeddings ``a[i] . b[i]``, clipped to [-1, 1] (the score)."""
    return np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)


def accepts(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The decision rule: True where ``clip(score, -1, 1) > threshold``."""
    return np.clip(np.asarray(scores, dtype=np.float64), -1.0, 1.0) > threshold


@dataclass(frozen=True)
class OperatingPoint:
    """One calibrated FAR: the threshold and what it gives on the calibration set."""

    threshold: float
    far_measured: float
    tar: float


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of one calibration set; ``points`` maps FAR keys (``far_1e-4``) of the
    resolved FARs to their operating point, ``unresolved`` holds the other keys."""

    set_name: str
    level: str
    n_genuine: int
    n_impostor: int
    points: Mapping[str, OperatingPoint]
    unresolved: tuple[str, ...] = ()
    score: str = SCORE

    def at(self, far: float) -> OperatingPoint | None:
        """The operating point at ``far``, or None when unresolved (or not calibrated)."""
        return self.points.get(far_key(far))

    def to_dict(self) -> dict[str, Any]:
        """The ``thresholds.json`` document (checked first: what is written reads back)."""
        self.check()
        return {
            "format_version": FORMAT_VERSION,
            "score": self.score,
            "accept": ACCEPT,
            "set": self.set_name,
            "level": self.level,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
            "thresholds": {
                key: {"threshold": p.threshold, "far_measured": p.far_measured, "tar": p.tar}
                for key, p in _by_far(self.points.items())
            },
            "unresolved": [key for key, _ in _by_far((k, None) for k in self.unresolved)],
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "thresholds") -> Thresholds:
        """Read a ``thresholds.json`` document back; DataFormatError names the bad field."""
        doc = _object(raw, where, "(top level)", _TOP_KEYS)
        if doc["format_version"] != FORMAT_VERSION or isinstance(doc["format_version"], bool):
            raise _fail(where, "format_version", f"{doc['format_version']!r} != {FORMAT_VERSION}")
        if doc["set"] is None:
            raise _fail(where, "set", "null: evaluate scored no verification protocol")
        for key, allowed in (("score", (SCORE,)), ("accept", (ACCEPT,)), ("level", LEVELS)):
            if doc[key] not in allowed:
                raise _fail(where, key, f"{doc[key]!r} is not one of {', '.join(allowed)}")
        points = {}
        table = _object(doc["thresholds"], where, "thresholds", None)
        for key, value in table.items():
            _far_of(key, where, "thresholds")
            point = _object(value, where, f"thresholds.{key}", _POINT_KEYS)
            points[key] = OperatingPoint(
                **{f: _number(point[f], where, f"thresholds.{key}.{f}") for f in _POINT_KEYS}
            )
        unresolved = doc["unresolved"]
        if not isinstance(unresolved, list) or not all(isinstance(k, str) for k in unresolved):
            raise _fail(where, "unresolved", f"expected a list of FAR keys, got {unresolved!r}")
        th = cls(
            set_name=doc["set"],
            level=doc["level"],
            n_genuine=_count(doc["n_genuine"], where, "n_genuine"),
            n_impostor=_count(doc["n_impostor"], where, "n_impostor"),
            points=points,
            unresolved=tuple(unresolved),
            score=doc["score"],
        )
        th.check(where)
        return th

    def check(self, where: str = "thresholds") -> None:
        """Values in range and consistent with the rule; DataFormatError names the field."""
        if not isinstance(self.set_name, str) or not self.set_name:
            raise _fail(where, "set", f"expected a benchmark name, got {self.set_name!r}")
        if self.level not in LEVELS:
            raise _fail(where, "level", f"{self.level!r} is not one of {', '.join(LEVELS)}")
        if self.score != SCORE:
            raise _fail(where, "score", f"{self.score!r} is not {SCORE}")
        for key in ("n_genuine", "n_impostor"):
            _count(getattr(self, key), where, key)
        for key, point in self.points.items():
            far = _far_of(key, where, "thresholds")
            field = f"thresholds.{key}"
            if not is_resolved(far, self.n_impostor):
                raise _fail(where, field, f"unresolved with {self.n_impostor} impostors")
            for name, lo, hi in (("threshold", -1, 1), ("far_measured", 0, far), ("tar", 0, 1)):
                value = _number(getattr(point, name), where, f"{field}.{name}")
                if not lo <= value <= hi:
                    raise _fail(where, f"{field}.{name}", f"{value!r} is outside [{lo}, {hi}]")
        for key in self.unresolved:
            far = _far_of(key, where, "unresolved")
            if key in self.points or self.unresolved.count(key) > 1:
                raise _fail(where, "unresolved", f"{key} is listed twice")
            if is_resolved(far, self.n_impostor):
                raise _fail(where, "unresolved", f"{key} is resolved by {self.n_impostor}")
        ordered = [p.threshold for _, p in _by_far(self.points.items())]
        if any(below < above for above, below in itertools.pairwise(ordered)):
            raise _fail(where, "thresholds", "a smaller FAR must not have a lower threshold")


def calibrate(
    scores: np.ndarray,
    genuine: np.ndarray,
    *,
    set_name: str,
    level: str,
    fars: Sequence[float] = FARS,
) -> Thresholds:
    """Thresholds at ``fars`` (a subset of :data:`FARS`) from one set's scored comparisons.

    ``scores``: cosines (higher = more alike), clipped to [-1, 1]; ``genuine``: bools or 0/1.
    Needs at least one genuine and one impostor comparison (ValueError otherwise).
    """
    unknown = [f for f in fars if far_key(f) not in KNOWN]
    if unknown:
        raise ValueError(f"fars must be among {', '.join(KNOWN)}, got {unknown}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise ValueError(f"scores must be a finite 1-D array, got shape {s.shape}")
    same = binary_labels(genuine, s.size)
    s = np.clip(s, -1.0, 1.0)
    impostor, gen = np.sort(s[~same]), np.sort(s[same])
    if impostor.size == 0 or gen.size == 0:
        raise ValueError("calibration needs genuine and impostor comparisons")
    points, unresolved = {}, []
    for far in sorted(set(fars), reverse=True):
        m = max_accepted(far, impostor.size)
        if m < 1:
            unresolved.append(far_key(far))
            continue
        threshold = impostor[impostor.size - 1 - m]  # the (m + 1)-th highest
        false_accepts = impostor.size - np.searchsorted(impostor, threshold, side="right")
        true_accepts = gen.size - np.searchsorted(gen, threshold, side="right")
        points[far_key(far)] = OperatingPoint(
            float(threshold), int(false_accepts) / impostor.size, int(true_accepts) / gen.size
        )
    return Thresholds(set_name, level, int(gen.size), int(impostor.size), points, tuple(unresolved))


def calibration_set(results: Mapping[str, BenchmarkResult | None]) -> str | None:
    """The benchmark to calibrate on: IJB-C if scored, else IJB-B, else the pair set with the
    most pairs (ties: the first in ``results``' order, the suite's); None when none is scored."""
    scored = {n: r.scores for n, r in results.items() if r is not None and r.scores is not None}
    for name in PREFERRED:
        if name in scored:
            return name
    images = [(len(s), -i, n) for i, (n, s) in enumerate(scored.items()) if s.level == "image"]
    return max(images)[2] if images else None


def calibrate_results(
    results: Mapping[str, BenchmarkResult | None], fars: Sequence[float] = FARS
) -> Thresholds | None:
    """:func:`calibrate` on the :func:`calibration_set` of a suite's results (None: no set)."""
    name = calibration_set(results)
    if name is None:
        return None
    found = results[name].scores  # type: ignore[union-attr]
    return calibrate(found.scores, found.genuine, set_name=name, level=found.level, fars=fars)


# ---------------------------------------------------------------------------- reading

_TOP_KEYS = (
    "format_version",
    "score",
    "accept",
    "set",
    "level",
    "n_genuine",
    "n_impostor",
    "thresholds",
    "unresolved",
)
_POINT_KEYS = ("threshold", "far_measured", "tar")


def _fail(where: str, key: str, problem: str) -> DataFormatError:
    return DataFormatError(f"{where}: {key}: {problem}", hint="re-run the evaluate stage")


def _by_far(items: Iterable[tuple[str, T]]) -> list[tuple[str, T]]:
    """``(FAR key, value)`` pairs ordered from the largest FAR down."""
    return sorted(items, key=lambda kv: -KNOWN.get(kv[0], 0.0))


def _object(raw: Any, where: str, name: str, keys: Sequence[str] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, name, f"expected an object, got {type(raw).__name__}")
    if keys is not None:
        missing = [k for k in keys if k not in raw]
        extra = sorted(set(raw) - set(keys))
        prefix = "" if name == "(top level)" else f"{name}."
        if missing:
            raise _fail(where, prefix + missing[0], "missing")
        if extra:
            raise _fail(where, prefix + extra[0], "unknown field")
    return raw


def _far_of(key: Any, where: str, name: str) -> float:
    if key not in KNOWN:
        raise _fail(where, name, f"{key!r} is not a known FAR ({', '.join(KNOWN)})")
    return KNOWN[key]


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, name, f"expected a finite number, got {value!r}")
    return float(value)


def _count(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, name, f"expected a positive integer, got {value!r}")
    return value
