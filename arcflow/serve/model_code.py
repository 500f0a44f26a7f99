"""The logged face model's entry point (MLflow "models from code"): run by MLflow on load.

The ``arcflow`` package travels with the model as one artifact, ``code`` (a zip of its
modules): this file puts that zip first on ``sys.path`` and hands over to
:class:`arcflow.serve.pyfunc.FaceModel`. One file instead of a copy of the package per model:
a package copy is ~140 artifacts, each its own upload through the tracking server. It
imports nothing from ``arcflow`` at module level, since it runs before the zip is on the path.
"""

from __future__ import annotations

import sys
import zipfile
from typing import Any

import mlflow.models
import mlflow.pyfunc
from mlflow.exceptions import MlflowException

CODE_ARTIFACT = "code"


class PackagedFaceModel(mlflow.pyfunc.PythonModel):
    """:class:`~arcflow.serve.pyfunc.FaceModel`, imported from the model's own code."""

    def load_context(self, context: Any) -> None:
        code = context.artifacts.get(CODE_ARTIFACT)
        if code is None or not zipfile.is_zipfile(code):
            raise MlflowException(
                f"this face model's code artifact ({code or 'missing'}) is not the zip of the "
                "arcflow package that log_face_model writes: re-log the model"
            )
        if code not in sys.path:
            sys.path.insert(0, code)
        from arcflow.serve.pyfunc import FaceModel

        self.face_model = FaceModel()
        self.face_model.load_context(context)

    def predict(self, context, model_input, params=None):  # no hints: MLflow would enforce them
        return self.face_model.predict(context, model_input, params)


mlflow.models.set_model(PackagedFaceModel())
