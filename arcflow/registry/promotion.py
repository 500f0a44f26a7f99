"""Champion/challenger promotion and rollback in the MLflow model registry.

``promote`` registers an exported model as a new version, aliases it ``challenger``, checks it
against the current ``champion`` (:mod:`arcflow.registry.gates`) and, if every gate passes, moves
``champion`` to it and ``previous-champion`` to the model it replaced. ``rollback`` gives
``champion`` back to ``previous-champion``. Both run under the registry lock, record the decision
as version tags and append an event to the audit log; ``dry_run`` only reads.
"""

from __future__ import annotations

import contextlib
import getpass
import time
from dataclasses import dataclass
from typing import Any

from arcflow.config import ExportParams, RegistryParams
from arcflow.errors import RegistryError
from arcflow.registry.gates import Check, Decision, decide, headline_metrics
from arcflow.registry.lock import registry_lock
from arcflow.registry.report import comparison, promotion_report
from arcflow.registry.store import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    Candidate,
    aliases,
    append_event,
    find_version,
    logged_model,
    register,
    set_alias,
    version_candidate,
)

TAG_VALUE_LIMIT = 5000  # MLflow's limit on a model version tag value
PROVENANCE = ("git_commit", "params_hash", "data_version")


@dataclass(frozen=True)
class Outcome:
    """What a promotion decided and did."""

    decision: Decision
    version: str | None  # the candidate's registry version (None in a dry run of a new model)
    champion_before: str | None
    champion_after: str | None
    report: str
    dry_run: bool

    @property
    def promoted(self) -> bool:
        return self.decision.promote


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: champion ``from_version`` -> ``to_version``."""

    from_version: str | None
    to_version: str
    previous_after: str | None
    dry_run: bool


def _actor() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _provenance(candidate: Candidate | None) -> dict[str, str]:
    if candidate is None:
        return {}
    return {key: candidate.params[key] for key in PROVENANCE if key in candidate.params}


def _guarded(client: Any, cfg: RegistryParams, dry_run: bool):
    """The registry lock, or nothing for a dry run (which changes nothing)."""
    if dry_run:
        return contextlib.nullcontext()
    return registry_lock(client, cfg.model_name, timeout_s=cfg.lock_timeout_s, ttl_s=cfg.lock_ttl_s)


def _already_champion(version: str) -> Decision:
    return Decision(
        (
            Check(
                "champion",
                "version",
                None,
                None,
                False,
                f"version {version} is the champion already",
            ),
        )
    )


def promote(
    client: Any,
    cfg: RegistryParams,
    parity: ExportParams,
    model_id: str,
    *,
    dry_run: bool = False,
) -> Outcome:
    """Register logged model ``model_id``, gate it against the champion, promote if it passes."""
    name = cfg.model_name
    candidate = logged_model(client, model_id)
    with _guarded(client, cfg, dry_run) as held:
        before = aliases(client, name).get(CHAMPION)
        champion = version_candidate(client, name, before) if before else None
        existing = find_version(client, name, model_id)
        version = str(existing.version) if existing is not None else None
        is_champion = before is not None and version == before
        if is_champion:
            decision = _already_champion(str(before))
        else:
            champion_metrics = None if before is None else (champion.metrics if champion else {})
            decision = decide(candidate.metrics, champion_metrics, cfg, parity, headline_metrics())
        after = before
        if not dry_run and not is_champion:
            held.check()
            if version is None:
                version = str(register(client, name, candidate, _provenance(candidate)).version)
            after = _apply(client, name, version, before, decision)
        report = promotion_report(
            name,
            decision,
            candidate=f"version {version}" if version else f"model {model_id}",
            champion=f"version {before}" if before else None,
            provenance={"candidate": _provenance(candidate), "champion": _provenance(champion)},
            dry_run=dry_run,
        )
        if not dry_run and not is_champion:
            held.check()
            _record(client, name, str(version), before, after, decision, candidate, report)
    return Outcome(decision, version, before, after, report, dry_run)


def _apply(
    client: Any, name: str, version: str, before: str | None, decision: Decision
) -> str | None:
    """Move the aliases; returns the champion after."""
    set_alias(client, name, CHALLENGER, version)
    if not decision.promote:
        return before
    if before is not None:
        set_alias(client, name, PREVIOUS, before)
    set_alias(client, name, CHAMPION, version)
    set_alias(client, name, CHALLENGER, None)
    return version


def _record(
    client: Any,
    name: str,
    version: str,
    before: str | None,
    after: str | None,
    decision: Decision,
    candidate: Candidate,
    report: str,
) -> None:
    """Version tags, the audit event and the report (an artifact of the candidate's run)."""
    at, by = _now(), _actor()
    tags = {
        "promotion.decision": "promoted" if decision.promote else "rejected",
        "promotion.summary": decision.summary(),
        "promotion.champion_before": before or "none",
        "promotion.at": at,
        "promotion.by": by,
        "promotion.comparison": comparison(decision),
    }
    if decision.promote:
        tags["promotion.replaced"] = before or "none"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:TAG_VALUE_LIMIT])
    event = {
        "event": tags["promotion.decision"],
        "version": version,
        "champion_before": before,
        "champion_after": after,
        "previous_after": before if decision.promote else None,
        "at": at,
        "by": by,
        "summary": decision.summary()[:1000],
    }
    append_event(client, name, event)
    if candidate.run_id:
        client.log_text(candidate.run_id, report, f"promotion/{name}-v{version}.md")


def rollback(client: Any, cfg: RegistryParams, *, dry_run: bool = False) -> Rollback:
    """Give ``champion`` back to ``previous-champion``; the one before it becomes previous."""
    name = cfg.model_name
    with _guarded(client, cfg, dry_run) as held:
        current = aliases(client, name)
        target = current.get(PREVIOUS)
        if target is None:
            raise RegistryError(
                f"{name}: no previous-champion to roll back to",
                hint="a rollback needs a champion that replaced another one (arcflow champion)",
            )
        before = current.get(CHAMPION)
        replaced = client.get_model_version(name, target).tags.get("promotion.replaced", "none")
        previous_after = None if replaced in ("none", target) else replaced
        if dry_run:
            return Rollback(before, target, previous_after, True)
        held.check()
        set_alias(client, name, CHAMPION, target)
        set_alias(client, name, PREVIOUS, previous_after)
        at, by = _now(), _actor()
        if before is not None:
            client.set_model_version_tag(name, before, "rollback.at", at)
            client.set_model_version_tag(name, before, "rollback.by", by)
        append_event(
            client,
            name,
            {
                "event": "rollback",
                "version": target,
                "champion_before": before,
                "champion_after": target,
                "previous_after": previous_after,
                "at": at,
                "by": by,
                "summary": f"champion {before} rolled back to {target}",
            },
        )
    return Rollback(before, target, previous_after, False)
