"""The local service stack (no Docker): its services answer, MLflow artifacts land in the S3
bucket, a Prefect flow run shows up in the Prefect server, and `make services-up/down`'s entry
point starts and stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from infra.local.processes import alive, healthy
from infra.local.stack import BUCKETS, Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_answers_and_the_environment_points_at_it(local_stack: Stack) -> None:
    assert local_stack.unhealthy() == []
    env = local_stack.env()
    assert env["MLFLOW_TRACKING_URI"] == local_stack.mlflow_url
    assert env["PREFECT_API_URL"] == f"{local_stack.prefect_url}/api"
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == local_stack.s3_url
    names = {b["Name"] for b in local_stack.s3_client().list_buckets()["Buckets"]}
    assert set(BUCKETS.values()) <= names
    for url in (local_stack.s3_url, local_stack.mlflow_url, local_stack.prefect_url):
        assert url.startswith("http://127.0.0.1:")


def test_mlflow_artifacts_go_through_the_proxy_into_the_bucket(local_stack: Stack) -> None:
    """The client has no S3 credentials: the server writes the artifact to S3."""
    code = (
        "import mlflow\n"
        "mlflow.set_experiment('stack-artifacts')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_text('hello', 'notes/hello.txt')\n"
        "print(run.info.run_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["MLFLOW_TRACKING_URI"] = local_stack.mlflow_url
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    pages = local_stack.s3_client().get_paginator("list_objects_v2")  # > 1000 keys by now
    keys = [
        obj["Key"]
        for page in pages.paginate(Bucket=BUCKETS["mlflow"])
        for obj in page.get("Contents", [])
    ]
    [key] = [k for k in keys if run_id in k and k.endswith("notes/hello.txt")]
    body = local_stack.s3_client().get_object(Bucket=BUCKETS["mlflow"], Key=key)["Body"].read()
    assert body == b"hello"


def test_a_flow_run_is_visible_in_the_prefect_server(local_stack: Stack) -> None:
    name = f"stack-check-{uuid.uuid4().hex[:8]}"
    code = (
        "from prefect import flow\n"
        f"@flow(name={name!r})\n"
        "def check(x: int) -> int:\n"
        "    return x + 1\n"
        "assert check(41) == 42\n"
    )
    env = {**os.environ, "PREFECT_API_URL": local_stack.env()["PREFECT_API_URL"]}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    request = urllib.request.Request(
        f"{local_stack.prefect_url}/api/flow_runs/filter",
        data=json.dumps({"flows": {"name": {"any_": [name]}}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read())
    assert [run["state_type"] for run in runs] == ["COMPLETED"]


def _descendant_commands(pid: int) -> list[str]:
    """The command lines of every process below ``pid`` (MLflow's job runners would be here),
    from /proc: each process's parent is field 4 of its stat line, after the command name."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    below, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        below += children
        frontier = children
    commands = []
    for child in below:
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{child}/cmdline").read_bytes()
            commands.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return commands


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (from /proc/net/tcp, tcp6)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(words)))
    return found


@pytest.mark.slow
def test_up_status_down_start_and_stop_every_process(tmp_path: Path) -> None:
    def stack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.local.stack", *args, "--dir", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    started = stack("up")
    try:
        assert started.returncode == 0, started.stderr
        record = json.loads((tmp_path / "stack.json").read_text())
        assert set(record["pids"]) == {"s3", "mlflow", "prefect"}
        for key in ("s3_url", "mlflow_url", "prefect_url"):  # reachable from this host only
            assert _listening_addresses(int(record[key].rsplit(":", 1)[1])) == {"127.0.0.1"}
        assert "export MLFLOW_TRACKING_URI=" in (tmp_path / "stack.env").read_text()
        assert _descendant_commands(record["pids"]["mlflow"])  # its uvicorn worker
        assert not [c for c in _descendant_commands(record["pids"]["mlflow"]) if "huey" in c]
        assert stack("status").returncode == 0
        again = stack("up")  # already up: reused, nothing new started
        assert again.returncode == 0
        assert json.loads((tmp_path / "stack.json").read_text())["pids"] == record["pids"]
    finally:
        stopped = stack("down")
    assert stopped.returncode == 0 and "prefect" in stopped.stdout
    assert not any(alive(pid) for pid in record["pids"].values())
    assert not healthy(f"{record['mlflow_url']}/health")
    assert stack("status").returncode == 1
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {
        "s3.log",
        "mlflow.log",
        "prefect.log",
    }
