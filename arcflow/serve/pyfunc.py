"""The face pipeline as an MLflow pyfunc model: what ``models:/arcface@champion`` loads and
``mlflow models serve`` serves.

Input: a DataFrame with a column ``image`` (encoded image bytes; base64 strings in JSON, which
MLflow's scoring server decodes) and/or ``path`` (server-side paths, honoured only under
``ARCFLOW_IMAGE_ROOT``). Params: ``task`` (``faces``: every face with its unit embedding;
``verify``: rows taken in pairs, 0 with 1, 2 with 3, …), ``aligned`` (the images are 112x112
aligned crops), ``max_faces``, ``min_score``, ``far``. Output: one record per face (or per pair),
and one error record per image that gave none; a bad image never fails the request.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from arcflow.serve.bundle import Bundle
from arcflow.serve.inputs import path_root
from arcflow.serve.pipeline import FacePipeline, load_bundle

BUNDLE_ARTIFACT = "bundle"
CODE_ARTIFACT = "code"  # the same name in model_code.py (which cannot import this module)
PRECISION_ENV = "ARCFLOW_FACE_PRECISION"
TASKS = ("faces", "verify")
#: What the served environment needs (the detector's own needs are added per bundle).
REQUIREMENTS = ("numpy", "pandas", "opencv-python-headless", "onnxruntime", "pillow")
DETECTOR_REQUIREMENTS = {
    "retinaface_mnet": (),
    "mtcnn": ("torch", "facenet-pytorch==2.6.0"),
    "retinaface": ("torch", "torchvision", "retinaface-pytorch==0.0.8"),
}


class FaceModel(mlflow.pyfunc.PythonModel):
    """detect → align → embed → decide, from the bundle logged as the ``bundle`` artifact."""

    pipeline: FacePipeline

    def load_context(self, context: Any) -> None:
        config = getattr(context, "model_config", None) or {}
        precision = config.get("precision") or os.environ.get(PRECISION_ENV) or "fp32"
        self.pipeline = load_bundle(context.artifacts[BUNDLE_ARTIFACT], precision=precision)

    def predict(self, context, model_input, params=None):  # no hints: MLflow would enforce them
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from arcflow.errors import ArcFlowError

        params = dict(params or {})
        task = params.get("task", "faces")
        if task not in TASKS:
            raise MlflowException(
                f"task must be one of {', '.join(TASKS)}, got {task!r}", INVALID_PARAMETER_VALUE
            )
        items = list(_items(model_input))
        allowed, root = path_root()
        try:
            result = self.pipeline.analyze(
                items,
                aligned=bool(params.get("aligned", False)),
                max_faces=int(params.get("max_faces", 0)),
                min_score=params.get("min_score"),
                allow_paths=allowed,
                root=root,
            )
            if task == "faces":
                return _frame(result.records())
            if len(items) % 2:
                raise MlflowException(
                    f"task verify compares images in pairs; got {len(items)} images",
                    INVALID_PARAMETER_VALUE,
                )
            far = params.get("far")
            rows = [
                {"pair": k // 2, **self.pipeline.decide_pair(result, k, k + 1, far).to_record()}
                for k in range(0, len(items), 2)
            ]
            return _frame(rows)
        except ArcFlowError as exc:  # a bad request as a whole (limits, parameters)
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from None


def _frame(records: list[dict]) -> Any:
    """Records as a DataFrame whose missing values stay None (JSON null, not NaN)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(records)
    return frame.astype(object).where(frame.notna(), None)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _items(model_input: Any) -> Iterator[object]:
    """Request rows -> items: the ``image`` bytes, else the ``path`` as a Path, else None."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        columns = [c for c in ("image", "path") if c in model_input.columns]
        if not columns:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(
                "the input needs a column 'image' (base64 in JSON) or 'path'",
                INVALID_PARAMETER_VALUE,
            )
        for row in model_input[columns].itertuples(index=False):
            image = getattr(row, "image", None)
            path = getattr(row, "path", None)
            if not _missing(image):
                yield image
            elif not _missing(path):
                yield Path(str(path))
            else:
                yield None
    else:  # a list of bytes / base64 strings, in-process
        yield from model_input


def signature(bundle: Bundle) -> Any:
    """Input columns and the params (with the bundle's defaults) the scoring server accepts."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)]
        ),
        params=ParamSchema(
            [
                ParamSpec("task", "string", "faces"),
                ParamSpec("aligned", "boolean", False),
                ParamSpec("max_faces", "long", 0),
                ParamSpec("min_score", "double", bundle.min_score),
                ParamSpec("far", "double", bundle.default_far),
            ]
        ),
    )


@contextmanager
def _code_zip() -> Iterator[Path]:
    """The ``arcflow`` package's modules in one zip (the ``code`` artifact), byte-identical for
    identical sources: fixed timestamps, sorted names."""
    package = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="arcflow-code-") as tmp:
        target = Path(tmp) / "arcflow.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for source in sorted(package.rglob("*.py")):  # sources only: no caches
                info = zipfile.ZipInfo(source.relative_to(package.parent).as_posix())
                info.compress_type = zipfile.ZIP_DEFLATED  # date_time: the fixed 1980-01-01
                archive.writestr(info, source.read_bytes())
        yield target


@contextmanager
def _named_bundle(bundle_dir: Path) -> Iterator[Path]:
    """``bundle_dir`` under the name ``bundle``: MLflow stores a directory artifact under its
    own base name, and readers (``registry.store.bundle_file``) look for ``artifacts/bundle``.
    Files are hard-linked where the file system allows it, else copied."""
    if bundle_dir.name == BUNDLE_ARTIFACT:
        yield bundle_dir
        return
    with tempfile.TemporaryDirectory(prefix="arcflow-bundle-") as tmp:
        target = Path(tmp) / BUNDLE_ARTIFACT

        def link_or_copy(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(bundle_dir, target, copy_function=link_or_copy)
        yield target


def log_face_model(bundle_dir: Path, bundle: Bundle, *, name: str, **kwargs: Any) -> Any:
    """``mlflow.pyfunc.log_model`` of the face pipeline in ``bundle_dir`` (active run): a model
    from code (:mod:`arcflow.serve.model_code`, no pickle) with two artifacts, the bundle and
    the ``arcflow`` package as one zip.

    ``kwargs`` go to ``log_model`` (params, tags, metadata, registered_model_name…).
    """
    requirements = [*REQUIREMENTS, *DETECTOR_REQUIREMENTS[bundle.detector], _mlflow_pin()]
    with _code_zip() as code, _named_bundle(Path(bundle_dir)) as staged:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={BUNDLE_ARTIFACT: str(staged), CODE_ARTIFACT: str(code)},
            signature=signature(bundle),
            pip_requirements=requirements,
            **kwargs,
        )


def _mlflow_pin() -> str:
    from importlib.metadata import version

    return f"mlflow=={version('mlflow')}"
