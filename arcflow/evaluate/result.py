"""What every benchmark returns: named metrics and, where it has one, a ROC curve."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class BenchmarkResult:
    """Metrics of one benchmark (name -> float) and an optional ROC ``(fpr, tpr)``.

    ``roc`` arrays are ascending in FPR; they feed the DVC plots and the PNG figures.
    ``details`` holds extra per-benchmark numbers worth keeping in the report (counts,
    thresholds) that are not metrics to compare models by.
    """

    metrics: Mapping[str, float]
    roc: tuple[np.ndarray, np.ndarray] | None = None
    details: Mapping[str, float | int | str] = field(default_factory=dict)

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
