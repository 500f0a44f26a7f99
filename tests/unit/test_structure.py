"""The layering and size rules of ARCHITECTURE.md, checked on the code itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("arcflow", "stages", "flows", "bench")
MAX_LINES = 600


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_data_never_imports_align() -> None:
    """The template and image decoding sit below both; data must not reach up into align."""
    upward = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imports(path) if m.startswith("arcflow.align")
        )
        for path in (ROOT / "arcflow" / "data").rglob("*.py")
    }
    assert {k: v for k, v in upward.items() if v} == {}


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for top in PRODUCT
        for path in (ROOT / top).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_flow_module_shadows_an_installed_package() -> None:
    """A deployment loads ``flows/<name>.py`` by path, which puts flows/ first on sys.path:
    a module named like a package (flows/dvc.py) would then be imported in its place."""
    import importlib.util
    import sys

    installed = [p for p in sys.path if p and Path(p).resolve() != ROOT]
    clashes = []
    for path in (ROOT / "flows").glob("*.py"):
        if path.name == "__init__.py":  # the package's own: never imported by its file name
            continue
        for entry in installed:
            base = Path(entry) / path.stem
            if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
                clashes.append(f"flows/{path.name} shadows {base}")
    assert importlib.util.find_spec("dvc") is not None  # the check can see the venv
    assert clashes == []
