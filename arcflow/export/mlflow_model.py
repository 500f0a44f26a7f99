"""The exported model in MLflow: its metrics as the registry reads them, its ONNX backbone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcflow.errors import TrackingError, first_line
from arcflow.serve.bundle import CONFIG_NAME, read_bundle
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
            f"{model_uri}: cannot download ({first_line(exc, 200)})",
            hint="check the model name and alias (arcflow champion) and MLFLOW_TRACKING_URI",
        ) from None
    bundles = sorted(local.rglob(CONFIG_NAME))
    if bundles:  # a face model: its backbone, not the detector's network
        folder = bundles[0].parent
        return folder / read_bundle(folder).backbone
    found = sorted(local.rglob("*.onnx"))
    if len(found) != 1:
        raise TrackingError(f"{model_uri}: {len(found)} .onnx files in the model's artifacts")
    return found[0]
