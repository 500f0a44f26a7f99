"""Presentation of benchmark results: metrics for DVC, ROC rows and figures, a markdown report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from arcflow.evaluate.published import PUBLISHED
from arcflow.evaluate.resolution import (
    BELOW_RESOLUTION,
    describe_size,
    matches_real_release,
    reported_metrics,
    resolution,
    set_size,
)
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
    """``benchmark -> metric -> value`` for ``dvc metrics``; absent ones as ``"not available"``,
    metrics the set cannot resolve as ``"below resolution"``, and ``resolution_far`` (1 / the
    impostor comparisons) where the benchmark counts them."""
    return {
        name: NOT_AVAILABLE if result is None else benchmark_document(result)
        for name, result in results.items()
    }


def benchmark_document(result: BenchmarkResult) -> dict[str, float | str]:
    """One benchmark's entry of :func:`metrics_document` (also what MLflow receives)."""
    doc = reported_metrics(result)
    min_far = resolution(result).min_far
    if min_far is not None:
        doc["resolution_far"] = min_far
    return doc


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


def _percent(value: float | str | None) -> str:
    if isinstance(value, str):
        return value
    return "–" if value is None else f"{100 * value:.2f}"


def dataset_banner(dataset: Mapping[str, object] | None) -> str:
    """Which data the numbers come from, first thing in the report."""
    if dataset is None:
        return (
            "**Data: unknown** (the aligned sets carry no `dataset.json`). Published numbers "
            "are shown only beside sets of the real protocol's size."
        )
    name = str(dataset.get("dataset", "unknown"))
    if dataset.get("synthetic"):
        return (
            f"**Data: {name}**, the embedded synthetic dataset, not the real releases. Its sets "
            "are small and generated: read the numbers to compare models trained here, never "
            "against the papers. Published numbers are shown only beside sets of the real "
            "protocol's size."
        )
    return (
        f"**Data: {name}** (source `{dataset.get('source', name)}`). Published numbers are "
        "shown only beside sets of the real protocol's size."
    )


def _metric_label(name: str, key: str, result: BenchmarkResult) -> str:
    """MegaFace's identification rate named with its distractor count (the paper's is at 1M)."""
    if name == "megaface" and key.endswith("rank1"):
        count = set_size(name, result.details).get("n_distractors")
        return f"{key} @ {count:,} distractors" if count else key
    return key


def _value(key: str, reported: Mapping[str, float | str], min_far: float | None) -> str:
    value = reported.get(key)
    if value == BELOW_RESOLUTION and min_far is not None:
        return f"{BELOW_RESOLUTION} (the set resolves FAR ≥ {min_far:.2g})"
    return _percent(value)


def markdown_report(
    results: Mapping[str, BenchmarkResult | None],
    titles: Mapping[str, str],
    headlines: Mapping[str, str],
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
    dataset: Mapping[str, object] | None = None,
) -> str:
    """A summary table (ours, each set's size, the published numbers where the protocol sizes
    match), every metric, then ``sections`` (markdown blocks, e.g. :func:`thresholds_section`)
    and the notes. Metrics read at a FAR the set cannot resolve say so instead of a value."""
    lines = [
        "# Evaluation report",
        "",
        dataset_banner(dataset),
        "",
        "Values in %. Published numbers: ResNet100 trained on MS1MV2 (ArcFace paper,",
        "arXiv 1801.07698v3; insightface model zoo, IJB notebooks); see",
        "`arcflow/evaluate/published.py`. A metric read at a FAR below 1 / (impostor",
        "comparisons) is *below resolution*: the set cannot measure it.",
        "",
        "| benchmark | set size | metric | ours | paper | insightface |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, result in results.items():
        metric = headlines[name]
        if result is None:
            lines.append(f"| {titles[name]} | | {metric} | {NOT_AVAILABLE} | | |")
            continue
        reported, min_far = reported_metrics(result), resolution(result).min_far
        published = PUBLISHED.get(name, {}) if matches_real_release(name, result.details) else {}
        shown = PUBLISHED.get(name, {})
        size = describe_size(name, result.details)
        keys = [metric, *(k for k in shown if k != metric and k in result.metrics)]
        for key in keys:
            ref = published.get(key)
            lines.append(
                f"| {titles[name]} | {size} | {_metric_label(name, key, result)} "
                f"| {_value(key, reported, min_far)} "
                f"| {_percent(ref and ref.paper)} | {_percent(ref and ref.insightface)} |"
            )
    lines += ["", "## All metrics", ""]
    for name, result in results.items():
        if result is None:
            continue
        lines += [f"### {titles[name]}", "", "| metric | value |", "|---|---:|"]
        lines += [
            f"| {k} | {v if isinstance(v, str) else f'{v:.6g}'} |"
            for k, v in benchmark_document(result).items()
        ]
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
