"""Presentation of benchmark results: metrics for DVC, ROC rows and figures, a markdown report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from arcflow.evaluate.published import PUBLISHED
from arcflow.evaluate.result import BenchmarkResult
from arcflow.evaluate.thresholds import ACCEPT, FARS, KNOWN, Thresholds, far_key

NOT_AVAILABLE = "not available"


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 400) -> np.ndarray:
    """Indices of at most about ``max_points`` ROC points, spread evenly along the curve and
    along log-FPR (so the low-FAR end of a million-point IJB curve keeps its shape)."""
    n = len(fpr)
    even = np.linspace(0, n - 1, min(n, max_points // 2)).round().astype(int)
    positive = np.asarray(fpr)[np.asarray(fpr) > 0]
    logs = np.zeros(0, dtype=int)
    if positive.size:
        grid = np.logspace(np.log10(positive.min()), 0, max_points // 2)
        logs = np.minimum(np.searchsorted(fpr, grid, side="right") - 1, n - 1)
    return np.unique(np.concatenate([even, logs, [0, n - 1]]))


def roc_rows(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 400) -> list[list[float]]:
    """ROC points thinned by :func:`thin_roc` (always keeping the first and last)."""
    return [[float(fpr[i]), float(tpr[i])] for i in thin_roc(fpr, tpr, max_points)]


def metrics_document(results: Mapping[str, BenchmarkResult | None]) -> dict[str, object]:
    """``benchmark -> metric -> value`` for ``dvc metrics``; absent ones as ``"not available"``."""
    return {
        name: NOT_AVAILABLE if result is None else {k: float(v) for k, v in result.metrics.items()}
        for name, result in results.items()
    }


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC"):
    """ROC curves on a log-FPR axis (returns a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, (fpr, tpr) in curves.items():
        keep = thin_roc(fpr, tpr, 2000)
        x, y = np.asarray(fpr)[keep], np.asarray(tpr)[keep]
        ax.plot(x[x > 0], y[x > 0], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_report(
    results: Mapping[str, BenchmarkResult | None],
    titles: Mapping[str, str],
    headlines: Mapping[str, str],
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> str:
    """A summary table (ours beside the paper's and insightface's numbers), every metric, then
    ``sections`` (markdown blocks, e.g. :func:`thresholds_section`) and the notes."""
    lines = [
        "# Evaluation report",
        "",
        "Values in %. Published numbers: ResNet100 trained on MS1MV2 (ArcFace paper,",
        "arXiv 1801.07698v3; insightface model zoo, IJB notebooks); see",
        "`arcflow/evaluate/published.py`.",
        "",
        "| benchmark | metric | ours | paper | insightface |",
        "|---|---|---:|---:|---:|",
    ]
    for name, result in results.items():
        metric = headlines[name]
        if result is None:
            lines.append(f"| {titles[name]} | {metric} | {NOT_AVAILABLE} | | |")
            continue
        published = PUBLISHED.get(name, {})
        keys = [metric, *(k for k in published if k != metric and k in result.metrics)]
        for key in keys:
            ref = published.get(key)
            lines.append(
                f"| {titles[name]} | {key} | {_percent(result.metrics.get(key))} "
                f"| {_percent(ref and ref.paper)} | {_percent(ref and ref.insightface)} |"
            )
    lines += ["", "## All metrics", ""]
    for name, result in results.items():
        if result is None:
            continue
        lines += [f"### {titles[name]}", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in result.metrics.items()]
        lines += [f"| {k} | {v} |" for k, v in result.details.items()]
        lines.append("")
    absent = [titles[n] for n, r in results.items() if r is None]
    if absent:
        lines += ["## Not available", "", f"No data for: {', '.join(absent)}.", ""]
    for section in sections:
        lines += [section.rstrip(), ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _far(key: str) -> str:
    return key.removeprefix("far_")


def thresholds_section(thresholds: Thresholds | None, titles: Mapping[str, str]) -> str:
    """The "Decision thresholds" block: the calibration set, its sizes, one row per FAR."""
    lines = ["## Decision thresholds", ""]
    if thresholds is None:
        lines.append("No verification protocol was scored: nothing to calibrate.")
        return "\n".join(lines) + "\n"
    th = thresholds
    title = titles.get(th.set_name, th.set_name)
    lines += [
        f"Calibrated on {title} ({th.level} pairs: {th.n_genuine:,} genuine, "
        f"{th.n_impostor:,} impostor); accept iff {ACCEPT}, the score being the {th.score}.",
        "",
        "| FAR | threshold | measured FAR | TAR |",
        "|---|---:|---:|---:|",
    ]
    for far in FARS:
        point = th.at(far)
        if point is not None:
            lines.append(
                f"| {_far(far_key(far))} | {point.threshold:.6f} | {point.far_measured:.3g} "
                f"| {point.tar:.4f} |"
            )
    unresolved = [_far(key) for key in sorted(th.unresolved, key=lambda k: -KNOWN.get(k, 0))]
    if unresolved:
        lines += [
            "",
            f"Unresolved (fewer than 1/FAR impostor pairs): {', '.join(unresolved)}.",
        ]
    return "\n".join(lines) + "\n"
