"""Attack: a stale ``stack.json`` (after a reboot, or once the numbers were reused) names pids
that now belong to someone else's processes. ``down`` signals only the processes it started,
recognised by boot, start time and command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local.processes import alive, identity
from infra.local.stack import down

pytestmark = [pytest.mark.attack, pytest.mark.unit]


@pytest.fixture()
def bystander() -> subprocess.Popen[bytes]:
    """Someone else's process, in a session of its own (as the stack's services are)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    yield proc
    proc.kill()
    proc.wait()


def _record(folder: Path, pid: int, recorded: dict[str, str] | None) -> None:
    state = {"root": str(folder), "s3_url": "", "mlflow_url": "", "prefect_url": ""}
    state["pids"] = {"mlflow": pid}
    if recorded is not None:
        state["identities"] = {"mlflow": recorded}
    (folder / "stack.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    "change",
    [
        {"start": "1"},  # the number reused by a later process
        {"boot": "00000000-0000-0000-0000-000000000000"},  # recorded before a reboot
        {"cmdline": "mlflow\0server\0"},  # another program entirely
        None,  # a record without identities (written before they were kept)
    ],
    ids=["reused pid", "other boot", "other command", "no identity"],
)
def test_down_leaves_a_process_that_is_not_the_one_it_started(
    change: dict[str, str] | None, bystander, tmp_path: Path
) -> None:
    recorded = None if change is None else {**identity(bystander.pid), **change}
    _record(tmp_path, bystander.pid, recorded)
    assert down(tmp_path) == []
    assert alive(bystander.pid)
    assert not (tmp_path / "stack.json").exists()  # the stale record itself is cleared


def test_down_stops_the_process_it_did_start(bystander, tmp_path: Path) -> None:
    _record(tmp_path, bystander.pid, identity(bystander.pid))
    assert down(tmp_path) == ["mlflow"]
    bystander.wait(timeout=30)
    assert not alive(bystander.pid)
