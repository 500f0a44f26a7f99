"""The workspace lock on the local stack's Prefect server: two different flows working in one
checkout never overlap (the second waits), a busy lock fails a flow after its timeout with one
line naming the holder, a holder that dies frees the checkout when its lease runs out, and the
pipeline flow and the retraining flow (which runs the pipeline as a subflow under its own hold)
started together on one checkout run one after the other."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flows.workspace import lock_name
from infra.local.stack import Stack
from tests.integration.flow_helpers import ROOT, flow_env, run_python

pytestmark = pytest.mark.integration

HOLD = """\
import json, os, sys, time
from pathlib import Path
from prefect import flow
from flows.workspace import workspace_lock

repo, who, seconds, timeout_s, events = sys.argv[1:6]

def note(what):
    with open(events, "a") as fh:
        fh.write(f"{who} {what} {time.time()}\\n")

@flow(name=f"hold-{who}")
def hold():
    note("start")
    with workspace_lock(Path(repo), float(timeout_s)):
        note("enter")
        if seconds == "die":
            os._exit(9)  # dies holding the lock: no release, no record dropped
        time.sleep(float(seconds))
        note("exit")

state = hold(return_state=True)
print(json.dumps({"state": state.type.value, "message": state.message}))
"""


def start_hold(
    stack: Stack, repo: Path, who: str, seconds: str, timeout_s: float, events: Path
) -> subprocess.Popen[str]:
    """A process running flow ``hold-<who>``: it holds ``repo``'s lock for ``seconds``."""
    argv = [sys.executable, "-c", HOLD, str(repo), who, seconds, str(timeout_s)]
    return subprocess.Popen(
        [*argv, str(events)], cwd=ROOT, env=flow_env(stack.env()),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> dict:
    """The JSON line the process printed last."""
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"exit {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"
    return json.loads(lines[-1])


def intervals(events: Path) -> dict[str, tuple[float, float]]:
    """{who: (entered, left)} from the events file (left: inf when it never left)."""
    seen: dict[str, dict[str, float]] = {}
    for line in events.read_text().splitlines():
        who, what, at = line.split()
        seen.setdefault(who, {})[what] = float(at)
    return {w: (e["enter"], e.get("exit", float("inf"))) for w, e in seen.items() if "enter" in e}


def wait_for(events: Path, text: str, timeout: float = 120) -> None:
    """Until ``text`` shows in ``events``."""
    deadline = time.monotonic() + timeout
    while not (events.exists() and text in events.read_text()):
        assert time.monotonic() < deadline, f"no {text!r} in {events} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture
def checkout(tmp_path: Path, local_stack: Stack) -> Iterator[Path]:
    """A directory standing for a checkout; its lock and holder record go when the test ends."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    yield repo
    name = lock_name(repo)
    for path in (f"v2/concurrency_limits/{name}", f"variables/name/{name}"):
        request = urllib.request.Request(f"{local_stack.prefect_url}/api/{path}", method="DELETE")
        with contextlib.suppress(urllib.error.HTTPError):  # never created, or dropped
            urllib.request.urlopen(request, timeout=30).close()


def test_two_flows_in_one_checkout_take_turns(
    tmp_path: Path, checkout: Path, local_stack: Stack
) -> None:
    events = tmp_path / "events.txt"
    procs = [start_hold(local_stack, checkout, who, "4", 240, events) for who in ("a", "b")]
    results = [finish(p) for p in procs]
    assert [r["state"] for r in results] == ["COMPLETED", "COMPLETED"], results
    (a_in, a_out), (b_in, b_out) = sorted(intervals(events).values())
    assert a_out <= b_in, intervals(events)  # the second entered after the first left
    assert b_out - a_in >= 8  # so they really did take turns


def test_a_busy_checkout_fails_a_flow_after_its_timeout_naming_the_holder(
    tmp_path: Path, checkout: Path, local_stack: Stack
) -> None:
    events = tmp_path / "events.txt"
    holder = start_hold(local_stack, checkout, "holder", "60", 120, events)
    try:
        wait_for(events, "holder enter")
        started = time.monotonic()
        waiter = finish(start_hold(local_stack, checkout, "waiter", "1", 2, events))
        waited = time.monotonic() - started
        impatient = finish(start_hold(local_stack, checkout, "impatient", "1", 0, events))
    finally:
        holder.kill()
        holder.communicate()
    assert waiter["state"] == "FAILED", waiter
    message = waiter["message"]
    assert f"workspace {checkout.resolve()} is busy: held by flow run 'hold-holder/" in message
    assert "waited 2 s (flows.workspace_lock_timeout_s)" in message
    assert waited < 25  # it gave up after its timeout, not when the holder let go
    assert impatient["state"] == "FAILED", impatient
    assert "held by flow run 'hold-holder/" in impatient["message"]
    assert "did not wait (flows.workspace_lock_timeout_s)" in impatient["message"]
    assert "holder exit" not in events.read_text()  # both failed while it held the checkout
    assert "waiter enter" not in events.read_text()
    assert "impatient enter" not in events.read_text()


@pytest.mark.slow
def test_a_holder_that_dies_frees_the_checkout_when_its_lease_runs_out(
    tmp_path: Path, checkout: Path, local_stack: Stack
) -> None:
    events = tmp_path / "events.txt"
    dead = start_hold(local_stack, checkout, "dead", "die", 60, events)
    dead.communicate(timeout=120)
    assert dead.returncode == 9
    after = finish(start_hold(local_stack, checkout, "next", "0", 240, events))
    assert after["state"] == "COMPLETED", after
    (died, _), (entered, _) = intervals(events)["dead"], intervals(events)["next"]
    assert entered - died >= 30  # not before the lease (60 s) ran out


STEP = """\
import os, pathlib, sys, time
name = sys.argv[1]
def note(what):
    with open(os.environ["EVENTS"], "a") as fh:
        fh.write(f"{os.environ['WHO']}:{name} {what} {time.time()}\\n")
note("enter")
time.sleep(1.5)
pathlib.Path(f"{name}.txt").write_text(os.environ["WHO"])
note("exit")
"""

TWO_STAGES = {
    "stages": {
        "one": {"cmd": "python step.py one", "deps": ["step.py"], "outs": ["one.txt"],
                "always_changed": True},
        "two": {"cmd": "python step.py two", "deps": ["one.txt"], "outs": ["two.txt"],
                "always_changed": True},
    }
}  # fmt: skip

# the retraining flow as it is, less what needs a trained model: promotion and its lineage
RETRAIN = """\
import json
from prefect import task
import flows.pipeline, flows.retrain

@task
def promote_model(repo, params_file):
    return {"promoted": False, "version": None, "report": "(test)", "model_name": "m"}

@task
def record_lineage(repo, params_file, source, revision, promotion):
    return {"source": source, "source_revision": revision}

flows.pipeline.promote_model = promote_model
flows.retrain.record_lineage = record_lineage
state = flows.retrain.retrain(repo=REPO, return_state=True)
result = state.result(raise_on_failure=False) if state.is_completed() else None
print(json.dumps({"state": state.type.value, "message": state.message,
                   "status": (result or {}).get("status")}))
"""

PIPELINE = """\
import json
from flows.pipeline import pipeline
state = pipeline(repo=REPO, promote=False, return_state=True)
print(json.dumps({"state": state.type.value, "message": state.message}))
"""


def start_flow(
    code: str, project: Path, stack: Stack, who: str, events: Path
) -> subprocess.Popen[str]:
    """A process running ``code`` in ``project``; its stages log as ``who`` into ``events``."""
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=project,
        env=flow_env(stack.env(), WHO=who, EVENTS=str(events)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def two_stage_project(root: Path, faces: Path) -> Path:
    """git + DVC project: one -> two, each logging when it runs; retraining watches ``faces``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["flows"].update(stage_retries=0, workspace_lock_timeout_s=240)
    params["data"]["sources"] = {"faces": {"uri": str(faces), "revision": "stale"}}
    params["align"]["source"] = "faces"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text(yaml.safe_dump(TWO_STAGES, sort_keys=False))
    (root / "step.py").write_text(STEP)
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def test_the_pipeline_and_retraining_started_together_never_overlap(
    tmp_path: Path, checkout: Path, local_stack: Stack
) -> None:
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "img.txt").write_text("pixels")
    project = two_stage_project(checkout, faces)
    events = tmp_path / "events.txt"
    procs = {
        who: start_flow(code.replace("REPO", repr(str(project))), project, local_stack, who, events)
        for who, code in (("retrain", RETRAIN), ("pipeline", PIPELINE))
    }
    results = {who: finish(proc, timeout=600) for who, proc in procs.items()}
    assert results["retrain"]["state"] == "COMPLETED", results
    assert results["retrain"]["status"] == "retrained", results  # its pipeline subflow ran
    assert results["pipeline"]["state"] == "COMPLETED", results
    lines = [line.split() for line in events.read_text().splitlines()]
    by_time = sorted(lines, key=lambda fields: float(fields[2]))
    flows_in_order = [label.split(":")[0] for label, _, _ in by_time]
    assert sorted(flows_in_order) == ["pipeline"] * 4 + ["retrain"] * 4  # 2 stages in and out
    first = flows_in_order[0]
    assert flows_in_order == [first] * 4 + [w for w in ("pipeline", "retrain") if w != first] * 4


def test_a_flow_holding_the_checkout_runs_its_subflows_under_its_hold(
    checkout: Path, local_stack: Stack
) -> None:
    code = """\
import json
from pathlib import Path
from prefect import flow
from flows.workspace import holder, workspace_lock

@flow
def inner(repo: str) -> dict:
    with workspace_lock(Path(repo), 0):  # 0: would fail at once if it waited on its parent
        return holder(Path(repo))

@flow(name="outer")
def outer(repo: str) -> dict:
    with workspace_lock(Path(repo), 0):
        return inner(repo)

record = outer({repo!r})
print(json.dumps({{"record": record, "after": holder(Path({repo!r}))}}))
""".format(repo=str(checkout))
    result = run_python(code, ROOT, flow_env(local_stack.env()))
    assert result["record"]["flow_run"].startswith("outer/"), result
    assert result["after"] is None  # the record goes with the hold
