"""What a benchmark's sizes can resolve, and whether its numbers compare with the published ones.

A TAR read at FAR f needs at least 1/f impostor comparisons: with fewer, the threshold sits
above every impostor (FAR measured 0) and the TAR is a number the set cannot support. Such
metrics are reported as :data:`BELOW_RESOLUTION`, never as a value. Published numbers are
printed beside ours only where the set has the real release's protocol size
(:data:`REAL_SIZES`): the paper's MegaFace rank-1 is at 1M distractors, not at 1,000.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from arcflow.evaluate.result import BenchmarkResult

BELOW_RESOLUTION = "below resolution"

#: A metric read at an error rate: ``tar_far_1e-4``, ``refined_tar_far_1e-6``,
#: ``ver_tpr_fpr_1e-9``, ``plain_tar_far_1e-5``.
_AT_RATE = re.compile(r"^(?:.*_)?(?:tar_far|tpr_fpr)_(?P<rate>\d+(?:\.\d+)?e-\d+)$")

#: The real releases' protocol sizes (``shared/reference/benchmarks.md``), as the benchmarks
#: count them in their details: a set of another size is not the published protocol.
REAL_SIZES: dict[str, dict[str, int]] = {
    "lfw": {"pairs": 6_000},
    "cfp_fp": {"pairs": 7_000},
    "cfp_ff": {"pairs": 7_000},
    "agedb_30": {"pairs": 6_000},
    "calfw": {"pairs": 6_000},
    "cplfw": {"pairs": 6_000},
    "ytf": {"pairs": 5_000},
    "megaface": {"n_distractors": 1_000_000},
    "ijbb": {"n_genuine": 10_270, "n_impostor": 8_000_000},
    "ijbc": {"n_genuine": 19_557, "n_impostor": 15_638_932},
}


@dataclass(frozen=True)
class Resolution:
    """The impostor comparisons behind a benchmark's rate metrics and the smallest FAR they
    resolve (``None``: the benchmark reads no metric at a rate, or does not count impostors)."""

    n_impostor: int | None

    @property
    def min_far(self) -> float | None:
        return 1.0 / self.n_impostor if self.n_impostor else None

    def resolves(self, metric: str) -> bool:
        """False for a metric read at a rate below 1 / the impostor count."""
        match = _AT_RATE.match(metric)
        if match is None or self.n_impostor is None:
            return True
        return float(match["rate"]) * self.n_impostor >= 1.0 - 1e-9


def resolution(result: BenchmarkResult) -> Resolution:
    """What ``result``'s impostor count (its ``n_impostor`` detail) can resolve."""
    count = result.details.get("n_impostor")
    return Resolution(int(count) if isinstance(count, int | float) else None)


def reported_metrics(result: BenchmarkResult) -> dict[str, float | str]:
    """``result``'s metrics with those its set cannot resolve replaced by
    :data:`BELOW_RESOLUTION`."""
    res = resolution(result)
    return {
        key: float(value) if res.resolves(key) else BELOW_RESOLUTION
        for key, value in result.metrics.items()
    }


def set_size(name: str, details: Mapping[str, object]) -> dict[str, int]:
    """The counts that define ``name``'s protocol size, as a set's ``details`` have them
    (MegaFace's distractor count from its impostors per probe when not recorded)."""
    found = dict(details)
    if name == "megaface" and "n_distractors" not in found and found.get("n_probes"):
        found["n_distractors"] = int(found["n_impostor"]) // int(found["n_probes"])  # type: ignore[call-overload]
    wanted = REAL_SIZES.get(name, {})
    return {key: int(found[key]) for key in wanted if isinstance(found.get(key), int | float)}  # type: ignore[call-overload]


def matches_real_release(name: str, details: Mapping[str, object]) -> bool:
    """Whether a set with these ``details`` has the real release's protocol size (so the
    published numbers are comparable). Benchmarks without a known size never match."""
    wanted = REAL_SIZES.get(name)
    return bool(wanted) and set_size(name, details) == wanted


def describe_size(name: str, details: Mapping[str, object]) -> str:
    """``6,000 pairs``, ``1,000 distractors``, ``1,500 genuine / 178,200 impostor``…"""
    size = set_size(name, details)
    if name in ("ijbb", "ijbc") and size:
        return f"{size.get('n_genuine', 0):,} genuine / {size.get('n_impostor', 0):,} impostor"
    words = {"pairs": "pairs", "n_distractors": "distractors"}
    return ", ".join(f"{value:,} {words.get(key, key)}" for key, value in size.items())
