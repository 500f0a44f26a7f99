"""Each stage logs the params it used into the pipeline's run, even when only it reruns.

MLflow params are write-once: a key logged with one value cannot take another. A stage that
reruns into the same run with a changed value (``dvc repro`` of evaluate alone, after
``evaluate.flip`` changed) therefore leaves the param as first logged and records the value it
used now as the tag ``params.<key>``; the tag goes again when the value returns to the logged
one. :func:`current_params` reads the params as the latest execution of each stage used them,
and every execution writes its sections as the artifact ``params/<stage>.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from arcflow.tracking.run import flatten

CHANGED_PREFIX = "params."  # tag: the value a rerun used where the logged param differs
MAX_PARAM_LENGTH = 6000  # MLflow keeps this many characters of a param value


def param_value(value: Any) -> str:
    """A value as MLflow stores it as a param (its ``str``, cut to MLflow's limit)."""
    return str(value)[:MAX_PARAM_LENGTH]


def log_stage_params(stage: str, sections: Mapping[str, Any]) -> list[str]:
    """Log ``sections`` into the active run as ``<section>.<key>`` params (see the module).

    Returns the keys whose value differs from the param logged before (now tagged).
    """
    import mlflow

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("log_stage_params needs an active MLflow run")
    client = mlflow.MlflowClient()
    run_id = active.info.run_id
    stored = client.get_run(run_id).data
    values = {key: param_value(v) for key, v in flatten("", dict(sections)).items()}
    new = {key: value for key, value in values.items() if key not in stored.params}
    changed = {
        key: value
        for key, value in values.items()
        if key in stored.params and stored.params[key] != value
    }
    if new:
        mlflow.log_params(new)
    if changed:
        mlflow.set_tags({CHANGED_PREFIX + key: value for key, value in changed.items()})
    for key in values.keys() - changed.keys():
        if CHANGED_PREFIX + key in stored.tags:  # back to the logged value
            client.delete_tag(run_id, CHANGED_PREFIX + key)
    plain = json.loads(json.dumps(dict(sections), default=str))  # tuples, paths: YAML-safe
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    mlflow.log_text(text, f"params/{stage}.yaml")
    return sorted(changed)


def current_params(run: Any) -> dict[str, str]:
    """A run's params as the latest execution of each stage used them (params overlaid with
    the ``params.<key>`` tags of reruns)."""
    params = dict(run.data.params)
    for tag, value in run.data.tags.items():
        key = tag[len(CHANGED_PREFIX) :]
        if tag.startswith(CHANGED_PREFIX) and key in params:
            params[key] = value
    return params
