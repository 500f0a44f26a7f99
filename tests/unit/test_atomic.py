"""Atomic outputs: success replaces, failure leaves the old output and no temp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcflow.atomic import atomic_dir, atomic_file

pytestmark = pytest.mark.unit


def test_atomic_file_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_file_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_replaces_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_atomic_dir_failure_leaves_nothing_new(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"\0" * 10)
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []
