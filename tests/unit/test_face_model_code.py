"""The face model's code artifact: the package's modules in one zip, the same bytes for the
same sources (a re-logged model's artifact does not change)."""

from __future__ import annotations

import zipfile

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
