"""``same_person`` at a chosen false accept rate, from the thresholds evaluate calibrated.

The rule is evaluate's (:mod:`arcflow.evaluate.thresholds`): accept iff the cosine of the two
unit embeddings is **strictly above** the threshold. A FAR that was calibrated is used as is;
any other FAR takes the strictest calibrated one not above it (never a looser threshold than
asked for). A FAR the calibration set could not resolve is refused, naming the set's size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from arcflow.errors import ConfigError
from arcflow.evaluate.thresholds import KNOWN, OperatingPoint, Thresholds, accepts


@dataclass(frozen=True)
class Decision:
    """The answer for one pair: the raw score, the threshold used and the FAR it stands for."""

    score: float | None
    threshold: float | None
    far: float  # the FAR asked for
    far_calibrated: float | None  # the calibrated FAR whose threshold was used
    far_measured: float | None  # that threshold's FAR on the calibration set
    same_person: bool | None
    error: str | None = None

    @classmethod
    def failed(cls, far: float, error: str) -> Decision:
        return cls(None, None, far, None, None, None, error)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def operating_point(thresholds: Thresholds | None, far: float) -> tuple[float, OperatingPoint]:
    """(calibrated FAR, its operating point) to use for ``far``; ConfigError if there is none."""
    if thresholds is None:
        raise ConfigError(
            "this model has no calibrated thresholds",
            hint="its evaluate stage scored no verification set: compare the raw scores yourself",
        )
    if not 0.0 < far < 1.0:
        raise ConfigError(f"far must be in (0, 1), got {far}")
    usable = sorted(
        ((KNOWN[key], point) for key, point in thresholds.points.items() if KNOWN[key] <= far),
        key=lambda fp: -fp[0],
    )
    if not usable:
        resolved = ", ".join(f"{KNOWN[k]:g}" for k in thresholds.points) or "none"
        raise ConfigError(
            f"FAR {far:g} is not resolved by the calibration set {thresholds.set_name} "
            f"({thresholds.n_impostor:,} impostor pairs); calibrated FARs: {resolved}",
            hint="ask for a calibrated FAR, or calibrate on a larger set (IJB-C)",
        )
    return usable[0]


def decide(score: float, thresholds: Thresholds | None, far: float) -> Decision:
    """The decision for a pair whose cosine is ``score``."""
    calibrated, point = operating_point(thresholds, far)
    same = bool(accepts([score], point.threshold)[0])
    return Decision(score, point.threshold, far, calibrated, point.far_measured, same)
