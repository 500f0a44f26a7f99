"""Scheduled retraining: when the watched data source changed, rerun the pipeline and promote.

    python -m flows.retrain [--repo .]

The watched source is ``flows.watch`` (default: ``align.source``), an entry of
``data.sources``. Its revision (S3 ETags, HTTP ETag, file sizes and times; see
:mod:`arcflow.data.sources.revision`) is compared with the one recorded in params.yaml
(``data.sources.<name>.revision``). Unchanged: the flow ends at once and says so. Changed: the
new revision is written to params.yaml (a DVC param of ``download@<name>``, so DVC reruns the
pipeline from there), the pipeline flow runs and promotes, and the lineage — data revision,
DVC data version, model version, decision — goes on the registry version as tags and into a
Prefect artifact. The flow holds the checkout's workspace lock (:mod:`flows.workspace`) from
before it reads params.yaml until the lineage is recorded; the pipeline subflow works under it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from arcflow.config import Params, load_params
from arcflow.data.sources.revision import source_revision
from arcflow.data.sources.spec import RetryPolicy, S3Options
from arcflow.errors import ConfigError
from arcflow.failures import one_line_errors
from flows.pipeline import MODEL_INFO, pipeline
from flows.workspace import workspace_lock

LINEAGE_KEY = "arcflow-lineage"


def watched(loaded: Params) -> str:
    """The name of the source retraining watches."""
    name = loaded.flows.watch or loaded.align.source
    if name not in loaded.data.sources:
        raise ConfigError(f"flows.watch: {name!r} is not in data.sources")
    return name


@task
def current_revision(params_file: Path, name: str) -> str:
    """The revision of source ``name`` now."""
    data = load_params(params_file, ("data",)).data
    source = data.sources[name]
    return source_revision(
        source.uri,
        options=source.options.model_dump() if source.options else None,
        s3=S3Options(**data.s3.model_dump()),
        retry=RetryPolicy(**data.retry.model_dump()),
    )


@task
def record_revision(params_file: Path, name: str, revision: str | None) -> None:
    """Write ``data.sources.<name>.revision`` into params.yaml, keeping its comments."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip mode: comments, order and quoting survive
    document = yaml.load(params_file.read_text())
    document["data"]["sources"][name]["revision"] = revision
    tmp = params_file.with_name(f".{params_file.name}.tmp")
    with tmp.open("w") as fh:
        yaml.dump(document, fh)
    tmp.replace(params_file)


@task
def record_lineage(
    repo: Path, params_file: Path, source: str, revision: str, promotion: dict
) -> dict:
    """data revision -> DVC data version -> model version, as registry tags and an artifact."""
    from arcflow.export.mlflow_model import read_model_id
    from arcflow.tracking.run import client as tracking_client

    loaded = load_params(params_file, ("tracking",))
    model_id = read_model_id(repo / MODEL_INFO)
    client = tracking_client(loaded.tracking, repo)
    data_version = client.get_logged_model(model_id).params.get("data_version", "unknown")
    lineage = {
        "source": source,
        "source_revision": revision,
        "data_version": data_version,
        "model_id": model_id,
        "model_name": promotion["model_name"],
        "model_version": promotion["version"],
        "promoted": promotion["promoted"],
    }
    if promotion["version"] is not None:
        for key in ("source", "source_revision"):
            client.set_model_version_tag(
                promotion["model_name"], promotion["version"], f"lineage.{key}", lineage[key]
            )
    create_table_artifact(
        key=LINEAGE_KEY, table=[lineage], description="data revision -> model version"
    )
    return lineage


@flow(name="arcflow-retrain", log_prints=True)
def retrain(repo: str = ".", params_file: str = "params.yaml") -> dict[str, Any]:
    """Retrain and promote when the watched source changed; otherwise end early."""
    root = Path(repo).resolve()
    params_path = root / params_file
    timeout_s = load_params(params_path, ("flows",)).flows.workspace_lock_timeout_s
    with workspace_lock(root, timeout_s):  # the pipeline subflow works under this hold
        return _retrain(root, params_path, params_file)


def _retrain(root: Path, params_path: Path, params_file: str) -> dict[str, Any]:
    """The retraining flow's body, run while it holds the workspace."""
    loaded = load_params(params_path, ("data", "align", "flows"))
    name = watched(loaded)
    recorded = loaded.data.sources[name].revision
    revision = current_revision(params_path, name)
    log = get_run_logger()
    if revision == recorded:
        message = f"no new data: source {name!r} is at revision {revision}, already trained on"
        log.info(message)
        create_markdown_artifact(key=LINEAGE_KEY, markdown=f"# Retraining\n\n{message}.")
        return {"status": "no new data", "source": name, "revision": revision}
    log.info("source %r changed: %s -> %s", name, recorded, revision)
    record_revision(params_path, name, revision)
    try:
        result = pipeline(repo=str(root), promote=True, params_file=params_file)
    except BaseException:
        # not trained on it after all: the next run must see the new data as new again
        record_revision(params_path, name, recorded)
        raise
    lineage = record_lineage(root, params_path, name, revision, result["promotion"])
    return {"status": "retrained", **lineage, "stages": result["stages"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repo", default=".", help="the checkout to retrain in (default: here)")
    args = p.parse_args()
    load_params(Path(args.repo) / "params.yaml", ("data", "align", "flows"))  # before the flow
    print(json.dumps(retrain(repo=args.repo), indent=2, default=str))


if __name__ == "__main__":
    with one_line_errors():
        main()
