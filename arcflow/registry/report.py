"""The promotion report: the decision and the candidate's metrics beside the champion's."""

from __future__ import annotations

import json
from collections.abc import Mapping

from arcflow.registry.gates import Check, Decision

RELATIVE = ("primary", "regression")  # gates whose reference is the champion's value


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.8g}"


def _delta(check: Check) -> str:
    if check.candidate is None or check.reference is None or check.gate not in RELATIVE:
        return ""
    return f"{check.candidate - check.reference:+.4g}"


def comparison(decision: Decision) -> str:
    """The checks as compact JSON (a version tag): gate, metric, candidate, reference, passed."""
    rows = [[c.gate, c.metric, c.candidate, c.reference, c.passed] for c in decision.checks]
    return json.dumps(rows, separators=(",", ":"))


def promotion_report(
    name: str,
    decision: Decision,
    *,
    candidate: str,
    champion: str | None,
    provenance: Mapping[str, Mapping[str, str]],
    dry_run: bool,
) -> str:
    """Markdown: verdict, one row per gate, then provenance of both models."""
    verdict = "promoted" if decision.promote else "not promoted"
    if dry_run:
        verdict = f"would be {verdict} (dry run: nothing changed)"
    against = f"champion {champion}" if champion else "no champion yet (absolute gates only)"
    lines = [
        f"# Promotion of `{name}`: {candidate} vs {against}",
        "",
        f"**Decision: {verdict}.** {decision.summary()}",
        "",
        "| gate | metric | candidate | champion / threshold | Δ | result |",
        "|---|---|---:|---:|---:|---|",
    ]
    for check in decision.checks:
        result = "pass" if check.passed else "**FAIL**"
        lines.append(
            f"| {check.gate} | `{check.metric}` | {_number(check.candidate)} | "
            f"{_number(check.reference)} | {_delta(check)} | {result} |"
        )
    for who, facts in provenance.items():
        if facts:
            lines += [
                "",
                f"**{who}**: " + ", ".join(f"{k} `{v}`" for k, v in sorted(facts.items())),
            ]
    return "\n".join(lines) + "\n"
