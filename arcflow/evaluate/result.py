"""What every benchmark returns: named metrics, where it has one a ROC curve, and for the
verification protocols the scored comparisons themselves (to calibrate decision thresholds)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

LEVELS = ("template", "image")


@dataclass(frozen=True, eq=False)
class VerificationScores:
    """The comparisons of a verification protocol: cosine scores (higher = more alike) and
    whether each is genuine. ``level``: ``"template"`` (IJB 1:1) or ``"image"`` (pair sets)."""

    scores: np.ndarray
    genuine: np.ndarray
    level: str

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if np.ndim(self.scores) != 1 or np.shape(self.genuine) != np.shape(self.scores):
            raise ValueError(
                f"scores and genuine must be aligned 1-D arrays, got shapes "
                f"{np.shape(self.scores)} and {np.shape(self.genuine)}"
            )

    def __len__(self) -> int:
        return int(np.shape(self.scores)[0])


@dataclass(frozen=True, eq=False)
class BenchmarkResult:
    """Metrics of one benchmark (name -> float) and an optional ROC ``(fpr, tpr)``.

    ``roc`` arrays are ascending in FPR; they feed the DVC plots and the PNG figures.
    ``details`` holds extra per-benchmark numbers worth keeping in the report (counts,
    thresholds) that are not metrics to compare models by. ``scores``: the comparisons of a
    verification protocol (pair sets, IJB 1:1), kept for threshold calibration; never written
    to the metrics.
    """

    metrics: Mapping[str, float]
    roc: tuple[np.ndarray, np.ndarray] | None = None
    details: Mapping[str, float | int | str] = field(default_factory=dict)
    scores: VerificationScores | None = None

    def __post_init__(self) -> None:
        for name, value in self.metrics.items():
            if not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")


def rate_key(prefix: str, rate: float) -> str:
    """Metric name for a value read at an error rate: ``("tar_far", 1e-4)`` -> ``tar_far_1e-4``.

    Only letters, digits, ``_``, ``-`` and ``.``, so the name is valid for MLflow and DVC alike.
    """
    mantissa, exponent = f"{rate:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{prefix}_{mantissa}e{int(exponent)}"
