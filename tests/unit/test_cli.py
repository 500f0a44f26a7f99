"""The arcflow command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from arcflow.cli import app

pytestmark = pytest.mark.unit


def test_validate_accepts_shipped_params(repo_root: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(repo_root / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_rejects_bad_params_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  lr: fast\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "Traceback" not in result.output


def test_info_lists_stack_versions() -> None:
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    for package in ("torch", "dvc", "mlflow", "prefect"):
        assert package in result.output


def test_synthface_sheet_writes_an_image(tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app, ["synthface-sheet", str(out), "--identities", "2", "--images", "3"]
    )
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out)).shape == (4 * 112, 3 * 112, 3)
