"""The workspace lock is named from the checkout's own id, not its path: volumes of their own
mounted at one path are two workspaces; one volume seen by two machines is one."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.workspace import ID_FILE, lock_name, workspace_id

pytestmark = pytest.mark.unit


def test_a_new_checkout_at_the_same_path_is_another_workspace(tmp_path: Path) -> None:
    repo = tmp_path / "workspace"
    repo.mkdir()
    first = lock_name(repo)
    assert lock_name(repo) == first and (repo / ID_FILE).is_file()  # stable for one checkout
    shutil.rmtree(repo)  # another container's volume mounted at the same path
    repo.mkdir()
    assert lock_name(repo) != first


def test_one_checkout_seen_at_two_paths_is_one_workspace(tmp_path: Path) -> None:
    repo = tmp_path / "volume"
    repo.mkdir()
    elsewhere = tmp_path / "mounted-elsewhere"
    elsewhere.symlink_to(repo)
    assert lock_name(repo) == lock_name(elsewhere)


def test_flows_making_the_id_at_once_agree_on_it(tmp_path: Path) -> None:
    repo = tmp_path / "workspace"
    repo.mkdir()
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: workspace_id(repo), range(32)))
    assert len(ids) == 1
    assert [p.name for p in (repo / ID_FILE).parent.iterdir()] == [ID_FILE.name]  # no drafts
