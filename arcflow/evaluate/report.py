"""Presentation of verification results: ROC rows for DVC plots and a figure for MLflow."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def roc_rows(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 400) -> list[list[float]]:
    """ROC points thinned to at most ``max_points`` (always keeping the first and last)."""
    n = len(fpr)
    keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return [[float(fpr[i]), float(tpr[i])] for i in keep]


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):  # -> matplotlib Figure
    """ROC curves of several pair sets on a log-FPR axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, (fpr, tpr) in curves.items():
        positive = fpr > 0
        ax.plot(fpr[positive], tpr[positive], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Verification ROC")
    fig.tight_layout()
    return fig
