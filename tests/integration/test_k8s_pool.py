"""The Kubernetes work pool on the local stack's real Prefect server (no cluster needed):
``python -m flows.deploy pool`` creates it from infra/k8s/base-job-template.json and updates
it, refuses a pool of another type, and the server takes the Kubernetes deployments' job
variables (and refuses what the template's schema forbids). Names are unique per test, and
what a test creates is deleted, so a reused stack keeps its own pools and deployments."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from arcflow.config import load_params
from arcflow.errors import ConfigError
from flows import deploy as arcflow_deploy
from infra.local.stack import Stack
from tests.integration.flow_helpers import ROOT, api, flow_env

pytestmark = pytest.mark.integration


def send(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    """PATCH or DELETE ``<prefect_url>/api/<path>``; a 503 (the server's SQLite busy under
    the suite's load) is retried, as Prefect's own client does."""
    request = urllib.request.Request(
        f"{stack.prefect_url}/api/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    for attempt in range(6):
        try:
            with urllib.request.urlopen(request, timeout=30):
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 5:
                raise
            time.sleep(0.5 * 2**attempt)


@pytest.fixture
def pool_name(local_stack: Stack) -> Iterator[str]:
    """A unique work pool name, this process's Prefect client pointed at the stack; the pool
    (if made) is deleted afterwards."""
    name = f"arcflow-k8s-test-{uuid4().hex[:8]}"
    with temporary_settings(updates={PREFECT_API_URL: f"{local_stack.prefect_url}/api"}):
        yield name
    try:
        send(local_stack, "DELETE", f"work_pools/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def test_pool_is_created_from_the_template_then_updated(local_stack: Stack, pool_name: str) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "flows.deploy", "pool", "--work-pool", pool_name],
        cwd=ROOT, env=flow_env(local_stack.env()), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    assert made.stdout.startswith(f"created work pool '{pool_name}' (kubernetes)")
    pool = api(local_stack.prefect_url, f"work_pools/{pool_name}")
    assert pool["type"] == "kubernetes"
    assert pool["base_job_template"] == json.loads(arcflow_deploy.TEMPLATE.read_text())

    send(local_stack, "PATCH", f"work_pools/{pool_name}", {"is_paused": True})
    changed = arcflow_deploy.load_template(arcflow_deploy.TEMPLATE)
    changed["variables"]["properties"]["gpus"]["default"] = 8
    assert arcflow_deploy.apply_kubernetes_pool(pool_name, changed) == "updated"
    pool = api(local_stack.prefect_url, f"work_pools/{pool_name}")
    assert pool["base_job_template"]["variables"]["properties"]["gpus"]["default"] == 8
    assert pool["is_paused"], "updating the template changed the pool's pause state"


def test_a_pool_of_another_type_or_none_is_refused(
    local_stack: Stack, pool_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(local_stack.prefect_url, "work_pools/", {"name": pool_name, "type": "process"})
    template = arcflow_deploy.load_template(arcflow_deploy.TEMPLATE)
    with pytest.raises(ConfigError, match=f"^work pool '{pool_name}' is a 'process' pool, not"):
        arcflow_deploy.apply_kubernetes_pool(pool_name, template)
    with pytest.raises(ConfigError, match=f"^work pool '{pool_name}-none' does not exist$"):
        arcflow_deploy.work_pool_type(f"{pool_name}-none")
    argv = ["flows.deploy", "deploy", "--repo", str(ROOT), "--work-pool", pool_name, "--gpus", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(ConfigError, match=r"^--image, --gpus and --workspace-pvc are for Kube"):
        arcflow_deploy.main()


def test_server_takes_the_kubernetes_deployments_job_variables(
    local_stack: Stack, pool_name: str
) -> None:
    assert arcflow_deploy.apply_kubernetes_pool(
        pool_name, arcflow_deploy.load_template(arcflow_deploy.TEMPLATE)
    ) == "created"  # fmt: skip
    settings = load_params(ROOT / "params.yaml", ("flows",)).flows
    suffix = uuid4().hex[:8]

    def deployments(job_variables: dict[str, Any]) -> list:
        made = arcflow_deploy.kubernetes_deployments(settings, job_variables)
        for d in made:
            d.name = f"{d.name}-{suffix}"
        return made

    job_variables = arcflow_deploy.kubernetes_job_variables("reg.example/arcflow:3", 2, "ws")
    ids = arcflow_deploy.apply_deployments(deployments(job_variables), pool_name)
    assert len(ids) == 2
    try:
        for deployment_id in ids:
            d = api(local_stack.prefect_url, f"deployments/{deployment_id}")
            assert d["work_pool_name"] == pool_name
            assert d["job_variables"] == job_variables
            assert d["entrypoint"] in {"flows.retrain.retrain", "flows.pipeline.pipeline"}
            assert d["parameters"] == {"repo": "/workspace"}
            assert not d["pull_steps"]
    finally:
        for deployment_id in ids:
            send(local_stack, "DELETE", f"deployments/{deployment_id}")
    # the server enforces the pool's variable schema: no negative GPU count
    negative = deployments(arcflow_deploy.kubernetes_job_variables(None, -1, None))
    with pytest.raises(ConfigError, match=r"'gpus'\. Failure reason: -1 is less than the minimum"):
        arcflow_deploy.apply_deployments(negative, pool_name)
