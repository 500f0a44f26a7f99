"""One MLflow run per pipeline execution: train opens it, later stages reopen it by id.

The run id lives in a small JSON file that DVC tracks as a train output, so evaluate and
export log into the run that produced the model they consume.
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


def tracking_uri(params: TrackingParams, root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else the local default resolved against ``root``."""
    uri = os.environ.get(ENV_URI) or params.default_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((root / uri[len(prefix) :]).resolve())
    return uri


def client(params: TrackingParams, root: Path) -> Any:
    """An ``MlflowClient`` on the tracking store (and its registry) of ``params``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(params, root))


def configure(params: TrackingParams, root: Path) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    try:
        if mlflow.get_experiment_by_name(params.experiment) is None:
            local = not os.environ.get(ENV_URI)  # the in-repo default store
            location = (root / "mlartifacts").resolve().as_uri() if local else None
            mlflow.create_experiment(params.experiment, artifact_location=location)
        mlflow.set_experiment(params.experiment)
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow tracking store {uri} is not usable: {first_line(exc)}",
            hint=f"start the server or unset {ENV_URI} to use the local store",
        ) from None
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
    resume: bool = False,
    system_metrics: bool = False,
) -> Iterator[Any]:
    """Open a run and record its id in ``run_file`` (written only if the block succeeds).

    With ``resume_file`` the id is also written there at once, and ``resume=True`` reopens the
    run it names: training killed and resumed goes on logging into the same run.
    ``system_metrics`` samples CPU, memory, disk, network (and GPU) use into the run.
    """
    import mlflow

    configure(params, root)
    resumed = resume and resume_file is not None and resume_file.exists()
    run_id = read_run_id(resume_file) if resumed else None  # type: ignore[arg-type]
    with mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else run_name,
        tags=tags,
        log_system_metrics=system_metrics,
    ) as run:
        record = {"run_id": run.info.run_id, "experiment": params.experiment}
        if resume_file is not None:
            write_json(resume_file, record)
        yield run
        write_json(run_file, record)


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
    """Reopen the pipeline's run so this stage logs next to the training results."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = configure(params, root)
    run_id = read_run_id(run_file)
    try:
        mlflow.get_run(run_id)
    except MlflowException:
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
