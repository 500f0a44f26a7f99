"""Log the exported ONNX model to MLflow with what the registry needs to judge it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arcflow.errors import TrackingError
from arcflow.export.onnx import INPUT_NAME, ort_session, read_metadata
from arcflow.tracking.run import flatten

ARTIFACT_NAME = "arcface"


def flat_metrics(prefix: str, document: Mapping[str, Any]) -> dict[str, float]:
    """``{bench: {metric: v}}`` -> ``{prefix.bench.metric: v}``; "not available" entries skipped."""
    return {
        key: float(value)
        for key, value in flatten(prefix, dict(document)).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def read_model_id(model_info: Path) -> str:
    """The logged model id the export stage recorded in ``model_info`` (onnx_model.json)."""
    try:
        return str(json.loads(model_info.read_text())["model_id"])
    except FileNotFoundError:
        raise TrackingError(
            f"{model_info}: no exported model recorded", hint="run the export stage first"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TrackingError(f"{model_info}: not a model record ({exc})") from None


def log_onnx_model(
    path: Path,
    example: np.ndarray | None,
    *,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
) -> Any:
    """``mlflow.onnx.log_model`` into the active run: signature, input example, the contract as
    metadata, provenance as params and tags; ``metrics`` are logged on the model itself."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature

    if example is None:
        example = np.zeros((1, 3, 112, 112), np.float32)
    example = example[:1]
    output = ort_session(path).run(None, {INPUT_NAME: example})[0]
    info = mlflow.onnx.log_model(
        onnx.load(str(path)),
        name=ARTIFACT_NAME,
        signature=infer_signature(example, output),
        input_example=example,
        metadata=read_metadata(path),
        save_as_external_data=False,
        params=dict(params),
        tags={f"arcflow.{key}": value for key, value in params.items()},
    )
    if metrics:
        mlflow.log_metrics(dict(metrics), model_id=info.model_id)
    return info


def download_onnx(model_uri: str, dst: Path | None = None) -> Path:
    """The ``.onnx`` file of a logged or registered model (``models:/arcface@champion``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=None if dst is None else str(dst)
            )
        )
    except MlflowException as exc:
        raise TrackingError(
            f"{model_uri}: cannot download ({str(exc).splitlines()[0][:200]})",
            hint="check the model name and alias (arcflow champion) and MLFLOW_TRACKING_URI",
        ) from None
    found = sorted(local.rglob("*.onnx"))
    if not found:
        raise TrackingError(f"{model_uri}: no .onnx file in the model's artifacts")
    return found[0]
