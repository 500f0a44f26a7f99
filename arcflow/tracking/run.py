"""One MLflow run per pipeline execution: train opens it, later stages reopen it by id.

The run id lives in a small JSON file that DVC tracks as a train output, so evaluate and
export log into the run that produced the model they consume.

Where the store is: ``MLFLOW_TRACKING_URI`` when set, else ``tracking.default_uri``. A relative
SQLite path (the default ``sqlite:///mlflow.db``) and the local artifact folder (``mlartifacts/``)
live in the DVC repository the stage belongs to (:func:`store_root`), never in the temporary
copy ``dvc exp run --queue`` / ``--temp`` runs an experiment in: the copy is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arcflow.atomic import write_json
from arcflow.config import TrackingParams
from arcflow.errors import TrackingError, first_line

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_DVC_ROOT = "DVC_ROOT"  # set by DVC for every stage command (dvc/stage/run.py)
EXPERIMENT_WORKSPACES = (".dvc", "tmp", "exps")  # where DVC runs queued / --temp experiments
ARTIFACTS = "mlartifacts"  # the local store's artifact folder, beside its database
SQLITE = "sqlite:///"


def store_root(root: Path) -> Path:
    """The repository whose local tracking store a stage at ``root`` uses.

    DVC sets ``DVC_ROOT`` for every stage command; for an experiment run from the queue (or
    with ``--temp``) it names the ORIGINAL repository, not the temporary copy under
    ``<repo>/.dvc/tmp/exps/`` the stage runs in. Without it (a stage run by hand), a ``root``
    inside such a copy still maps to ``<repo>``; anything else is ``root`` itself.
    """
    env = os.environ.get(ENV_DVC_ROOT)
    if env and Path(env).is_dir():
        return Path(env).resolve()
    parts = root.resolve().parts
    width = len(EXPERIMENT_WORKSPACES)
    for start in range(len(parts) - width, 0, -1):  # the innermost copy
        if parts[start : start + width] == EXPERIMENT_WORKSPACES:
            return Path(*parts[:start])
    return root.resolve()


def local_artifacts(uri: str) -> Path | None:
    """Where a local SQLite store keeps its artifacts: ``mlartifacts/`` beside the database
    (``<repo>/mlartifacts`` for the default); None for a server, which decides for itself."""
    if not uri.startswith(SQLITE):
        return None
    return Path(uri[len(SQLITE) :].split("?", 1)[0]).parent / ARTIFACTS


def tracking_uri(params: TrackingParams, root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else ``tracking.default_uri``; a relative SQLite path is
    resolved against :func:`store_root` (so it is absolute)."""
    uri = os.environ.get(ENV_URI) or params.default_uri
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str((store_root(root) / uri[len(SQLITE) :]).resolve())
    return uri


def client(params: TrackingParams, root: Path) -> Any:
    """An ``MlflowClient`` on the tracking store (and its registry) of ``params``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(params, root))


def _unusable(uri: str, exc: Exception) -> TrackingError:
    return TrackingError(
        f"MLflow tracking store {uri} is not usable: {first_line(exc)}",
        hint=f"start the server or unset {ENV_URI} to use the local store",
    )


def configure(params: TrackingParams, root: Path) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment.

    An experiment a local SQLite store creates keeps its artifacts beside the database
    (:func:`local_artifacts`), not in MLflow's default ``./mlruns`` of the working directory.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    try:
        if mlflow.get_experiment_by_name(params.experiment) is None:
            artifacts = local_artifacts(uri)
            location = artifacts.resolve().as_uri() if artifacts is not None else None
            mlflow.create_experiment(params.experiment, artifact_location=location)
        mlflow.set_experiment(params.experiment)
    except MlflowException as exc:
        raise _unusable(uri, exc) from None
    return uri


@contextlib.contextmanager
def start_run(
    params: TrackingParams,
    root: Path,
    run_file: Path,
    *,
    run_name: str,
    tags: dict[str, str],
    resume_file: Path | None = None,
    resume_key: str | None = None,
    system_metrics: bool = False,
) -> Iterator[Any]:
    """Open a run and record its id in ``run_file`` (written only if the block succeeds).

    With ``resume_file`` the id is also written there at once, with ``resume_key`` (the
    training run's fingerprint); a later call with the same key reopens that run: training
    killed and resumed goes on logging into the same run, while another run's leftovers
    (other params, other data) start a new one.
    ``system_metrics`` samples CPU, memory, disk, network (and GPU) use into the run.
    """
    import mlflow

    configure(params, root)
    run_id = _resumable_run(resume_file, resume_key)
    with mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else run_name,
        tags=tags,
        log_system_metrics=system_metrics,
    ) as run:
        record = {"run_id": run.info.run_id, "experiment": params.experiment}
        if resume_file is not None:
            write_json(resume_file, {**record, "resume_key": resume_key})
        yield run
        write_json(run_file, record)


def _resumable_run(resume_file: Path | None, key: str | None) -> str | None:
    """The run id ``resume_file`` records for ``key``, else None (nothing to resume)."""
    if resume_file is None or key is None or not resume_file.exists():
        return None
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
        record = json.loads(resume_file.read_text())
        if record.get("resume_key") == key:
            return str(record["run_id"])
    return None


def read_run_id(run_file: Path) -> str:
    """The run id recorded by the train stage."""
    try:
        return str(json.loads(run_file.read_text())["run_id"])
    except FileNotFoundError:
        raise TrackingError(
            f"{run_file}: no MLflow run recorded",
            hint="run the train stage first (dvc repro train)",
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TrackingError(f"{run_file}: not a run record ({exc})") from None


@contextlib.contextmanager
def resume_run(params: TrackingParams, root: Path, run_file: Path) -> Iterator[Any]:
    """Reopen the pipeline's run so this stage logs next to the training results.

    The run is found by id in whatever experiment holds it: ``tracking.experiment`` names the
    experiment new runs go to, so renaming it neither moves nor breaks the runs before.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    run_id = read_run_id(run_file)
    try:
        experiment_id = mlflow.get_run(run_id).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)  # start_run checks it holds the run
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise _unusable(uri, exc) from None
        raise TrackingError(
            f"MLflow run {run_id} (from {run_file}) is not in the tracking store {uri}",
            hint="the store was reset or MLFLOW_TRACKING_URI changed; rerun training: "
            "dvc repro --force train",
        ) from None
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """Flatten nested params into MLflow's dotted keys (``train.lr``)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: obj}
