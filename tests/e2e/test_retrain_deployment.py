"""The retraining deployment, served against the local stack's Prefect server: its schedule and
scheduled runs exist; `run_deployment` runs the whole (tiny) pipeline in dvc.yaml's order, and
the model is registered and promoted in the MLflow server with its data lineage; a second run
finds no new data and trains nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra.local.stack import Stack
from tests.e2e.test_pipeline import _copy_checkout
from tests.integration.flow_helpers import api, child_flow_runs, flow_env, run_python, task_runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STAGES = ["download@faces", "align", "train", "evaluate", "export", "leaderboard"]
TWO_AT_ONCE = """\
import json, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
runs = [run_deployment("arcflow-retrain/scheduled", timeout=0) for _ in range(2)]
with get_client(sync_client=True) as client:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = [client.read_flow_run(run.id).state for run in runs]
        if all(state.is_final() for state in states):
            break
        time.sleep(2)
print(json.dumps({"states": sorted(state.type.value for state in states)}))
"""
EMIT = """\
import json
from prefect.events import emit_event
event = emit_event(event="arcflow.data.new", resource={"prefect.resource.id": "arcflow.data"})
print(json.dumps({"sent": event is not None}))
"""
RUN_DEPLOYMENT = """\
import json
from prefect.deployments import run_deployment
run = run_deployment("arcflow-retrain/scheduled", timeout=1500, poll_interval=2)
print(json.dumps({"state": run.state.type.value, "flow_run_id": str(run.id)}))
"""


def tiny_params(work: Path, faces: Path, model_name: str) -> None:
    """The default params, shrunk to minutes: a tiny SynthFace release as the watched source."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["sources"] = {"faces": {"uri": str(faces)}}
    params["align"]["source"] = "faces"
    params["train"].update(
        width=0.125, embedding_size=32, epochs=1, batch_size=8, val_every=1000, warmup_epochs=0.0
    )
    params["export"].update(parity_real=8, latency_runs=3, throughput_batch=8)
    params["registry"].update(model_name=model_name, primary_metric="eval.lfw.accuracy")
    params["registry"]["min_metrics"] = {}
    params["tracking"]["experiment"] = f"retrain-{model_name}"
    params["flows"].update(stage_retries=0, trigger_event="arcflow.data.new")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture()
def served(
    repo_root: Path, tmp_path: Path, tiny_release: Path, local_stack: Stack
) -> Iterator[tuple[Path, str]]:
    """A checkout copy with tiny params, its deployments served by `python -m flows.deploy`."""
    work = tmp_path / "work"
    work.mkdir()
    _copy_checkout(repo_root, work)
    (work / "dvc.lock").unlink(missing_ok=True)
    for stale in ("metrics", "plots", "reports"):
        shutil.rmtree(work / stale, ignore_errors=True)
    faces = tmp_path / "faces"
    shutil.copytree(tiny_release, faces)
    model_name = f"arcface-retrain-{uuid.uuid4().hex[:8]}"
    tiny_params(work, faces, model_name)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.deploy", "serve", "--repo", str(work)],
            cwd=work, env=flow_env(local_stack.env()), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield work, model_name
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        print(log.read_text()[-5000:])


def wait_for(fetch, timeout: float = 120.0):
    """Poll ``fetch`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = fetch()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(1)
    raise TimeoutError("not there in time")


def test_scheduled_retraining_runs_the_pipeline_and_promotes(
    served: tuple[Path, str], local_stack: Stack
) -> None:
    import mlflow

    work, model_name = served
    url = local_stack.prefect_url
    deployment = wait_for(lambda: api(url, "deployments/name/arcflow-retrain/scheduled"))
    [schedule] = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * 1" and schedule["active"]
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    scheduled = wait_for(
        lambda: api(
            url,
            "flow_runs/filter",
            {
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            },
        )
    )
    assert all(run["deployment_id"] == deployment["id"] for run in scheduled)

    env = flow_env(local_stack.env())
    first = run_python(RUN_DEPLOYMENT, work, env, timeout=1800)
    assert first["state"] == "COMPLETED", first
    [pipeline_run] = child_flow_runs(url, first["flow_run_id"])
    names = [r["name"] for r in task_runs(url, [pipeline_run])]
    assert [n for n in names if n.startswith("stage-")] == [f"stage-{s}" for s in STAGES]
    assert names[-1].startswith("promote_model")
    [summary] = api(url, "artifacts/filter", {"flow_runs": {"id": {"any_": [pipeline_run]}}})
    assert summary["key"] == "arcflow-pipeline"
    assert "**Decision: promoted.**" in summary["data"] and "| lfw |" in summary["data"]
    [lineage] = api(
        url, "artifacts/filter", {"flow_runs": {"id": {"any_": [first["flow_run_id"]]}}}
    )
    assert lineage["key"] == "arcflow-lineage"
    [row] = json.loads(lineage["data"])
    assert (row["model_name"], row["model_version"], row["promoted"]) == (model_name, "1", True)
    assert row["source"] == "faces" and row["data_version"] not in ("", "unknown")

    client = mlflow.MlflowClient(local_stack.mlflow_url)
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert str(champion.version) == "1"
    params = yaml.safe_load((work / "params.yaml").read_text())
    revision = params["data"]["sources"]["faces"]["revision"]
    assert champion.tags["lineage.source_revision"] == revision
    assert champion.tags["promotion.decision"] == "promoted"

    second = run_python(RUN_DEPLOYMENT, work, env, timeout=600)
    assert second["state"] == "COMPLETED", second
    assert child_flow_runs(url, second["flow_run_id"]) == []  # no new data: no pipeline
    assert len(client.search_model_versions(f"name='{model_name}'")) == 1

    # two runs at once: the concurrency limit (CANCEL_NEW) cancels the second
    both = run_python(TWO_AT_ONCE, work, env, timeout=900)
    assert both["states"] == ["CANCELLED", "COMPLETED"], both

    # the "new data" event starts a retraining too (flows.trigger_event)
    def runs_of_deployment() -> dict[str, str]:
        query = {"deployments": {"id": {"any_": [deployment["id"]]}}}
        return {r["id"]: r["state_type"] for r in api(url, "flow_runs/filter", query)}

    before = set(runs_of_deployment())
    assert run_python(EMIT, work, env)["sent"]
    triggered = wait_for(
        lambda: [
            run_id
            for run_id, state in runs_of_deployment().items()
            if run_id not in before and state == "COMPLETED"
        ],
        timeout=180,
    )
    assert len(triggered) == 1
