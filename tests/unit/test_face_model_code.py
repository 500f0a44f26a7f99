"""The face model's code artifact: the package's modules in one zip, the same bytes for the
same sources (a re-logged model's artifact does not change)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from arcflow.serve.pyfunc import _code_zip

pytestmark = pytest.mark.unit


def test_the_code_zip_holds_the_package_sources_and_is_reproducible() -> None:
    with _code_zip() as first:
        data = first.read_bytes()
        names = zipfile.ZipFile(first).namelist()
    with _code_zip() as second:
        assert second.read_bytes() == data
    assert names == sorted(names) and all(n.startswith("arcflow/") for n in names)
    assert {"arcflow/__init__.py", "arcflow/serve/pyfunc.py", "arcflow/serve/model_code.py"} <= set(
        names
    )
    assert not [n for n in names if not n.endswith(".py")]


@pytest.mark.parametrize("artifact", [None, "not-a-zip.txt"])
def test_a_model_without_its_code_zip_is_one_clear_error(tmp_path: Path, artifact) -> None:
    """A tampered or hand-made model folder: refused before anything is put on sys.path."""
    import mlflow.models.model
    from mlflow.exceptions import MlflowException

    import arcflow.serve.model_code as model_code

    mlflow.models.model.__mlflow_model__ = None  # the module registered its model on import
    artifacts = {}
    if artifact:
        (tmp_path / artifact).write_text("import os; os.system('echo pwned')")
        artifacts["code"] = str(tmp_path / artifact)
    before = list(sys.path)
    with pytest.raises(MlflowException, match="not the zip of the arcflow package"):
        model_code.PackagedFaceModel().load_context(SimpleNamespace(artifacts=artifacts))
    assert sys.path == before
