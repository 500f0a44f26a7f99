"""Reading and writing the MLflow registry: logged models, versions, aliases, the audit log.

The audit log is a series of registered-model tags ``audit.<time in ns>.<random>``, each a JSON
event (promoted, rejected, rollback) with the champion before and after. Every entry has a key of
its own (an append never overwrites another, whoever writes it), in time order; it is appended
to under the promotion lock, so it replays to the current aliases.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from arcflow.errors import RegistryError, first_line

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
AUDIT_PREFIX = "audit."
MODEL_URI_PREFIX = "models:/"


@dataclass(frozen=True)
class Candidate:
    """A logged model: its id, the run it was logged in, its metrics and provenance."""

    model_id: str
    run_id: str | None
    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        return f"{MODEL_URI_PREFIX}{self.model_id}"


def logged_model(client: Any, model_id: str) -> Candidate:
    """The logged model ``model_id`` with its latest value of each metric."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_logged_model(model_id)
    except MlflowException as exc:
        raise RegistryError(
            f"logged model {model_id} is not in the tracking store: {first_line(exc)}",
            hint="export logs the model (dvc repro export); check MLFLOW_TRACKING_URI",
        ) from None
    latest: dict[str, tuple[int, int, float]] = {}
    for metric in model.metrics or []:
        stamp = (metric.step, metric.timestamp)
        if metric.key not in latest or stamp >= latest[metric.key][:2]:
            latest[metric.key] = (*stamp, float(metric.value))
    return Candidate(
        model_id=model.model_id,
        run_id=model.source_run_id,
        metrics={key: value for key, (_, _, value) in latest.items()},
        params=dict(model.params or {}),
    )


def version_model_id(version: Any) -> str | None:
    """The logged model behind a registry version (MLflow 3 records it, or its source URI)."""
    model_id = getattr(version, "model_id", None)
    if model_id:
        return str(model_id)
    source = str(version.source or "")
    rest = source[len(MODEL_URI_PREFIX) :] if source.startswith(MODEL_URI_PREFIX) else ""
    return rest if rest.startswith("m-") and "/" not in rest else None


def version_candidate(client: Any, name: str, version: str) -> Candidate | None:
    """The logged model of ``name`` version ``version``; None if it has none (pre-MLflow 3)."""
    model_id = version_model_id(client.get_model_version(name, version))
    return logged_model(client, model_id) if model_id else None


def aliases(client: Any, name: str) -> dict[str, str]:
    """alias -> version of the registered model; empty if it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def find_version(client: Any, name: str, model_id: str) -> Any | None:
    """The registry version of ``name`` made from logged model ``model_id``, if any."""
    for version in client.search_model_versions(f"name='{name}'"):
        if version_model_id(version) == model_id:
            return version
    return None


def register(client: Any, name: str, candidate: Candidate, tags: dict[str, str]) -> Any:
    """A new version of ``name`` (created if needed) from the candidate's logged model."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description="ArcFace face model: photo in; faces, embeddings, decisions out"
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name,
        source=candidate.model_uri,
        run_id=candidate.run_id,
        tags=tags,
        model_id=candidate.model_id,
    )
    describe_version(client, name, str(version.version), candidate.model_id)
    return version


def bundle_file(client: Any, model_id: str, name: str) -> str | None:
    """The text of file ``name`` of a face model's bundle; None for a model without one."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    location = client.get_logged_model(model_id).artifact_location
    with tempfile.TemporaryDirectory(prefix="arcflow-card-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/artifacts/bundle/{name}", dst_path=tmp
            )
        except (MlflowException, OSError):
            return None
        with open(path, encoding="utf-8") as f:
            return f.read()


def describe_version(client: Any, name: str, version: str, model_id: str) -> None:
    """The model card as the version's description; the thresholds (set, size) as its tags."""
    from arcflow.serve.bundle import CONFIG_NAME
    from arcflow.serve.card import description
    from arcflow.serve.package import CARD

    card = bundle_file(client, model_id, CARD)
    if card is not None:
        client.update_model_version(name, version, description=description(card))
    config = bundle_file(client, model_id, CONFIG_NAME)
    thresholds = (json.loads(config) if config else {}).get("thresholds") or {}
    for key in ("set", "level", "n_genuine", "n_impostor"):
        if key in thresholds:
            client.set_model_version_tag(name, version, f"thresholds.{key}", str(thresholds[key]))
    for far, point in (thresholds.get("thresholds") or {}).items():
        client.set_model_version_tag(name, version, f"thresholds.{far}", str(point["threshold"]))


def set_alias(client: Any, name: str, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``; None removes it."""
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)


def audit_log(client: Any, name: str) -> list[dict[str, Any]]:
    """Every recorded event of ``name``, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException:
        return []
    keys = sorted(key for key in tags if key.startswith(AUDIT_PREFIX))
    return [json.loads(tags[key]) for key in keys]


def append_event(client: Any, name: str, event: dict[str, Any]) -> str:
    """Append ``event`` to the audit log (call under the promotion lock); returns its key."""
    key = f"{AUDIT_PREFIX}{time.time_ns():020d}.{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, json.dumps(event, sort_keys=True))
    return key
