"""``--model`` for the CLI: a registry or run URI, a bundle folder, or a saved MLflow model.

The bundle's files are downloaded and read as data; the pickled pyfunc wrapper is never
loaded, so nothing in a model is executed to use it.
"""

from __future__ import annotations

from pathlib import Path

from arcflow.errors import ConfigError, TrackingError, first_line
from arcflow.serve.bundle import CONFIG_NAME
from arcflow.serve.pipeline import FacePipeline, load_bundle

URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "file://")


def _bundle_in(folder: Path, what: str) -> Path:
    if (folder / CONFIG_NAME).is_file():
        return folder
    found = sorted(folder.rglob(CONFIG_NAME))
    if not found:
        raise ConfigError(
            f"{what}: not a face model (no {CONFIG_NAME} in it)",
            hint="the export stage writes one to models/face_model and logs it to MLflow",
        )
    return found[0].parent


def _download(uri: str, dst: Path | None) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=None if dst is None else str(dst)
            )
        )
    except (MlflowException, OSError) as exc:
        raise TrackingError(
            f"{uri}: cannot load the model ({first_line(exc, 200)})",
            hint="check the name and alias (arcflow champion) and MLFLOW_TRACKING_URI",
        ) from None


def load_pipeline(
    model: str, *, precision: str = "fp32", cache: Path | None = None
) -> FacePipeline:
    """The face pipeline of ``model`` (see the module docstring for what it may be)."""
    if model.startswith(URI_SCHEMES):
        return load_bundle(_bundle_in(_download(model, cache), model), precision=precision)
    path = Path(model)
    if path.is_dir():
        return load_bundle(_bundle_in(path, model), precision=precision)
    if path.exists():
        raise ConfigError(f"{model}: expected a face model folder or a model URI, got a file")
    raise ConfigError(
        f"{model}: no such folder or model URI",
        hint="models:/<name>@champion, runs:/<run id>/arcface or a folder like models/face_model",
    )
