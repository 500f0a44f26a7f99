"""The flows on a small DVC project of their own: stage order from dvc.yaml, retries, a failing
stage failing the flow before promotion, Prefect's ephemeral API, and retraining's early exit
when nothing changed. Runs go to the local stack's Prefect server and are read back over REST."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.local.stack import BUCKETS, Stack
from tests.integration.flow_helpers import (
    ROOT,
    api,
    flow_env,
    flow_run_code,
    run_python,
    task_runs,
)

pytestmark = pytest.mark.integration

FLAKY = """\
import pathlib, sys
counter = pathlib.Path("attempts.txt")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if n <= int(pathlib.Path("fails.txt").read_text()):
    sys.exit(f"flaky: attempt {n} fails")
pathlib.Path("b.txt").write_text(pathlib.Path("a.txt").read_text() + " b")
"""

DVC_YAML = {
    "stages": {
        # defined out of order: the flow must follow the DAG, as `dvc repro` does
        "last": {"cmd": "python -c \"import pathlib; pathlib.Path('c.txt').write_text("
                 "pathlib.Path('b.txt').read_text() + ' c')\"",
                 "deps": ["b.txt"], "outs": ["c.txt"]},
        "first": {"cmd": "python -c \"import pathlib; pathlib.Path('a.txt').write_text('a')\"",
                  "outs": ["a.txt"]},
        "flaky": {"cmd": "python flaky.py", "deps": ["a.txt", "flaky.py"], "outs": ["b.txt"]},
    }
}  # fmt: skip


def make_project(root: Path, fails: int) -> Path:
    """A git + DVC project: first -> flaky (fails ``fails`` times) -> last."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["flows"].update(stage_retries=2, retry_delay_s=0)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "flaky.py").write_text(FLAKY)
    (root / "fails.txt").write_text(str(fails))
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def run_pipeline(project: Path, stack: Stack, *, promote: bool) -> dict:
    """The pipeline flow on ``project`` in a subprocess against the stack's Prefect server."""
    code = flow_run_code("flows.pipeline", "pipeline", repo=str(project), promote=promote)
    return run_python(code, project, flow_env(stack.env()))


def test_a_stage_that_fails_twice_is_retried_to_success_in_dag_order(
    tmp_path: Path, local_stack: Stack
) -> None:
    project = make_project(tmp_path / "p", fails=2)
    result = run_pipeline(project, local_stack, promote=False)
    assert result["state"] == "COMPLETED", result
    runs = task_runs(local_stack.prefect_url, [result["flow_run_id"]])
    stages = [r["name"] for r in runs if r["name"].startswith("stage-")]
    assert stages == ["stage-first", "stage-flaky", "stage-last"]
    flaky = next(r for r in runs if r["name"] == "stage-flaky")
    assert flaky["run_count"] == 3 and flaky["state_type"] == "COMPLETED"
    assert (project / "c.txt").read_text() == "a b c"
    assert (project / "attempts.txt").read_text() == "3"


def test_a_stage_that_keeps_failing_fails_the_flow_and_promotes_nothing(
    tmp_path: Path, local_stack: Stack
) -> None:
    project = make_project(tmp_path / "p", fails=99)
    result = run_pipeline(project, local_stack, promote=True)
    assert result["state"] == "FAILED", result
    assert "dvc repro --single-item flaky exited with 255" in result["message"], result
    assert "flaky: attempt 3 fails" in result["message"], result
    names = [r["name"] for r in task_runs(local_stack.prefect_url, [result["flow_run_id"]])]
    assert names == ["stage-first", "stage-flaky"]  # no stage-last, no promote_model
    assert not (project / "c.txt").exists()
    assert (project / "attempts.txt").read_text() == "3"  # 1 run + 2 retries


def test_with_a_dvc_remote_the_flow_pulls_first_and_pushes_after(
    tmp_path: Path, local_stack: Stack
) -> None:
    project = make_project(tmp_path / "p", fails=0)
    prefix = f"flows-{tmp_path.name}"
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run(
        [dvc, "remote", "add", "-d", "storage", f"s3://{BUCKETS['dvc']}/{prefix}"],
        cwd=project, check=True, capture_output=True,
    )  # fmt: skip
    result = run_pipeline(project, local_stack, promote=False)
    assert result["state"] == "COMPLETED", result
    names = [r["name"] for r in task_runs(local_stack.prefect_url, [result["flow_run_id"]])]
    assert names == ["dvc-pull", "stage-first", "stage-flaky", "stage-last", "dvc-push"]
    listed = (
        local_stack.s3_client()
        .list_objects_v2(Bucket=BUCKETS["dvc"], Prefix=prefix)
        .get("Contents", [])
    )
    assert len(listed) == 3  # a.txt, b.txt, c.txt


def test_the_pipeline_flow_runs_on_the_ephemeral_api(tmp_path: Path) -> None:
    """No PREFECT_API_URL: Prefect starts its own temporary API; the flow still runs."""
    project = make_project(tmp_path / "p", fails=0)
    code = flow_run_code("flows.pipeline", "pipeline", repo=str(project), promote=False)
    env = flow_env(None, PREFECT_HOME=str(tmp_path / "prefect-home"))
    result = run_python(code, project, env)
    assert result["state"] == "COMPLETED", result
    assert (project / "c.txt").read_text() == "a b c"


def test_retraining_without_new_data_ends_early_and_trains_nothing(
    tmp_path: Path, local_stack: Stack
) -> None:
    from arcflow.data.sources.revision import source_revision

    project = make_project(tmp_path / "p", fails=0)
    dataset = tmp_path / "faces"
    dataset.mkdir()
    (dataset / "img.txt").write_text("pixels")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["sources"] = {
        "faces": {"uri": str(dataset), "revision": source_revision(str(dataset))}
    }
    params["align"]["source"] = "faces"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    code = flow_run_code("flows.retrain", "retrain", repo=str(project))
    result = run_python(code, project, flow_env(local_stack.env()))
    assert result["state"] == "COMPLETED", result
    names = [r["name"] for r in task_runs(local_stack.prefect_url, [result["flow_run_id"]])]
    assert [n.rsplit("-", 1)[0] for n in names] == ["current_revision"]  # no pipeline, no stage
    [artifact] = api(
        local_stack.prefect_url,
        "artifacts/filter",
        {"flow_runs": {"id": {"any_": [result["flow_run_id"]]}}},
    )
    assert artifact["key"] == "arcflow-lineage" and "no new data" in artifact["data"]
    assert not (project / "a.txt").exists() and not (project / "dvc.lock").exists()

    (dataset / "img2.txt").write_text("more pixels")  # new data: the revision moves
    assert source_revision(str(dataset)) != params["data"]["sources"]["faces"]["revision"]


READ_DEPLOYMENTS = """\
import asyncio, json
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        found = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
        print(json.dumps({
            f"{flows[d.flow_id]}/{d.name}": {
                "pool": d.work_pool_name,
                "crons": [s.schedule.cron for s in d.schedules],
                "repo": d.parameters.get("repo"),
                "limit": d.global_concurrency_limit.limit if d.global_concurrency_limit else None,
            }
            for d in found
        }))

asyncio.run(main())
"""


def test_deploy_registers_both_deployments_on_a_work_pool(tmp_path: Path) -> None:
    """`python -m flows.deploy deploy` (for workers), here on the ephemeral API."""
    env = flow_env(None, PREFECT_HOME=str(tmp_path / "prefect-home"))
    prefect = str(Path(sys.executable).with_name("prefect"))
    for cmd in (
        [prefect, "work-pool", "create", "arcflow-test", "--type", "process"],
        [sys.executable, "-m", "flows.deploy", "deploy", "--work-pool", "arcflow-test"],
    ):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    deployments = run_python(READ_DEPLOYMENTS, ROOT, env)
    assert deployments["arcflow-retrain/scheduled"] == {
        "pool": "arcflow-test",
        "crons": ["0 3 * * 1"],
        "repo": str(ROOT),
        "limit": 1,
    }
    assert deployments["arcflow-pipeline/on-demand"]["crons"] == []
