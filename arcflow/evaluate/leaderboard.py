"""The leaderboard: every model's headline metric per benchmark, beside the published numbers.

Rows come from each model's ``eval.json`` (the evaluate stage's metrics document) as they are,
so the table's numbers are the evaluate metrics; the reference rows are the ArcFace paper's and
insightface's released R100 (MS1MV2) numbers; the last row is each benchmark's set size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arcflow.evaluate.published import PUBLISHED
from arcflow.evaluate.resolution import matches_real_release
from arcflow.evaluate.suite import BENCHMARKS
from arcflow.serve.card import set_size

FIXED_COLUMNS = ("model", "source", "license")
REFERENCES = (
    ("ArcFace paper (R100, MS1MV2)", "paper"),
    ("insightface R100 (MS1MV2)", "insightface"),
)


@dataclass(frozen=True)
class Entry:
    """One model: its name, where it came from, its licence and its ``eval.json``."""

    name: str
    source: str
    license: str
    metrics: Mapping[str, Any]


def _headline(entry: Entry, benchmark: str, metric: str) -> float | None:
    values = entry.metrics.get(benchmark)
    if isinstance(values, Mapping) and isinstance(values.get(metric), int | float):
        return float(values[metric])
    return None


def scored_columns(entries: Sequence[Entry]) -> list[tuple[str, str, str]]:
    """``(benchmark, title, headline)`` of every benchmark some model was scored on."""
    return [
        (b.name, b.title, b.headline)
        for b in BENCHMARKS
        if any(_headline(e, b.name, b.headline) is not None for e in entries)
    ]


def leaderboard_table(
    entries: Sequence[Entry], sizes: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """Column -> values: one row per model, the reference rows, then the set sizes
    (``mlflow.log_table``'s input; columns ``<benchmark>.<metric>``)."""
    columns = scored_columns(entries)
    table: dict[str, list[Any]] = {key: [] for key in FIXED_COLUMNS}
    for name, _, metric in columns:
        table[f"{name}.{metric}"] = []

    def add(fixed: tuple[str, str, str], values: list[Any]) -> None:
        for key, value in zip(FIXED_COLUMNS, fixed, strict=True):
            table[key].append(value)
        for (name, _, metric), value in zip(columns, values, strict=True):
            table[f"{name}.{metric}"].append(value)

    for entry in entries:
        add(
            (entry.name, entry.source, entry.license),
            [_headline(entry, n, m) for n, _, m in columns],
        )
    for label, who in REFERENCES:  # only beside sets of the real protocol's size
        published = [
            PUBLISHED.get(n, {}).get(m) if matches_real_release(n, sizes.get(n, {})) else None
            for n, _, m in columns
        ]
        add((label, "published", ""), [getattr(p, who) if p else None for p in published])
    add(("set size", "", ""), [set_size(sizes.get(n, {})) for n, _, _ in columns])
    return table


def _cell(value: Any, best: bool) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"**{value:.4f}**" if best else f"{value:.4f}"
    return str(value)


def leaderboard_markdown(entries: Sequence[Entry], sizes: Mapping[str, Mapping[str, Any]]) -> str:
    """The table as markdown, the best model per benchmark in bold."""
    table = leaderboard_table(entries, sizes)
    columns = scored_columns(entries)
    keys = [f"{n}.{m}" for n, _, m in columns]
    best = {
        key: max((v for v in table[key][: len(entries)] if v is not None), default=None)
        for key in keys
    }
    header = ["model", "source", "licence", *(f"{t} {m}" for _, t, m in columns)]
    lines = [
        "# Leaderboard",
        "",
        "Every model scored by the same evaluate stage on the same aligned sets (headline "
        "metric per benchmark, fractions; best model in bold). The reference rows are "
        "published numbers of R100 models trained on MS1MV2 (5.8M images), shown only for "
        "sets of the real protocol's size.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(FIXED_COLUMNS) + "---:|" * len(columns),
    ]
    for row in range(len(table["model"])):
        cells = [str(table[key][row]) or "–" for key in FIXED_COLUMNS]
        for key in keys:
            value = table[key][row]
            cells.append(
                _cell(value, row < len(entries) and value is not None and value == best[key])
            )
        lines.append("| " + " | ".join(cells) + " |")
    missing = [b.title for b in BENCHMARKS if b.name not in {n for n, _, _ in columns}]
    if missing:
        lines += ["", f"Not available for any model: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"
