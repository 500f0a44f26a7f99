"""The promotion decision: a candidate's metrics against the champion's and the configured gates.

Pure: metrics in (flat ``eval.<benchmark>.<metric>`` / ``export.<key>`` names), checks out.
Every check records both numbers, so the decision can be shown side by side and audited.
A value that is missing fails its gate: a candidate is never promoted on what it did not measure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from arcflow.config import ExportParams, RegistryParams

EVAL_PREFIX = "eval."


@dataclass(frozen=True)
class Check:
    """One gate applied to one metric."""

    gate: str  # metrics | parity | latency | absolute | primary | regression | champion
    metric: str
    candidate: float | None
    reference: float | None  # the champion's value, or the threshold of an absolute gate
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """Every check, and whether they all passed."""

    checks: tuple[Check, ...]

    @property
    def promote(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        if self.promote:
            return "promote: every gate passed"
        return "reject: " + "; ".join(check.detail for check in self.failures)


def _at_most(gate: str, metric: str, value: float | None, limit: float) -> Check:
    if value is None:
        return Check(gate, metric, None, limit, False, f"{metric} was not recorded")
    ok = value <= limit
    return Check(
        gate, metric, value, limit, ok, f"{metric} = {value:.6g} {'<=' if ok else '>'} {limit:.6g}"
    )


def _at_least(gate: str, metric: str, value: float | None, floor: float) -> Check:
    if value is None:
        return Check(gate, metric, None, floor, False, f"{metric} was not recorded")
    ok = value >= floor
    return Check(
        gate, metric, value, floor, ok, f"{metric} = {value:.6g} {'>=' if ok else '<'} {floor:.6g}"
    )


def absolute_checks(
    candidate: Mapping[str, float], gates: RegistryParams, parity: ExportParams
) -> list[Check]:
    """Gates every candidate must pass, champion or not: metrics exist, parity, latency, floors."""
    has_eval = any(key.startswith(EVAL_PREFIX) for key in candidate)
    checks = [
        Check(
            "metrics",
            "eval.*",
            None,
            None,
            has_eval,
            "benchmark metrics recorded" if has_eval else "the candidate has no benchmark metrics",
        ),
        _at_most(
            "parity", "export.max_abs_diff", candidate.get("export.max_abs_diff"), parity.atol
        ),
        _at_least(
            "parity", "export.min_cosine", candidate.get("export.min_cosine"), parity.min_cosine
        ),
    ]
    if gates.max_latency_ms is not None:
        key = "export.onnx_latency_ms_median"
        checks.append(_at_most("latency", key, candidate.get(key), gates.max_latency_ms))
    checks += [
        _at_least("absolute", key, candidate.get(key), floor)
        for key, floor in sorted(gates.min_metrics.items())
    ]
    return checks


def relative_checks(
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    gates: RegistryParams,
    headline: Iterable[str],
) -> list[Check]:
    """The primary metric improves by >= delta; no benchmark regresses by more than epsilon."""
    key = gates.primary_metric
    new, old = candidate.get(key), champion.get(key)
    if new is None or old is None:
        who = "candidate" if new is None else "champion"
        checks = [Check("primary", key, new, old, False, f"the {who} has no {key}")]
    else:
        ok = new - old >= gates.min_improvement - 1e-12
        verb = "improves" if ok else "does not improve"
        checks = [
            Check(
                "primary",
                key,
                new,
                old,
                ok,
                f"{key} {verb} by >= {gates.min_improvement:g} ({old:.6g} -> {new:.6g})",
            )
        ]
    watched = gates.regression_metrics if gates.regression_metrics is not None else headline
    for key in sorted(set(watched)):
        old = champion.get(key)
        if old is None:
            continue  # the champion never measured it: nothing to regress from
        new = candidate.get(key)
        if new is None:
            checks.append(Check("regression", key, None, old, False, f"{key} was not measured"))
            continue
        ok = new >= old - gates.max_regression - 1e-12
        verb = "within" if ok else "drops by more than"
        checks.append(
            Check(
                "regression",
                key,
                new,
                old,
                ok,
                f"{key} {verb} {gates.max_regression:g} ({old:.6g} -> {new:.6g})",
            )
        )
    return checks


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    gates: RegistryParams,
    parity: ExportParams,
    headline: Iterable[str] = (),
) -> Decision:
    """All gates for ``candidate``; the relative ones only when there is a champion."""
    checks = absolute_checks(candidate, gates, parity)
    if champion is not None:
        checks += relative_checks(candidate, champion, gates, headline)
    return Decision(tuple(checks))


def headline_metrics() -> list[str]:
    """``eval.<benchmark>.<headline metric>`` for every benchmark of the suite."""
    from arcflow.evaluate.suite import BENCHMARKS

    return [f"{EVAL_PREFIX}{b.name}.{b.headline}" for b in BENCHMARKS]
