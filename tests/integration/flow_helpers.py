"""Running flows in subprocesses against a Prefect API, and reading their runs back over REST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def flow_env(stack_env: dict[str, str] | None, **extra: str) -> dict[str, str]:
    """The environment of a flow subprocess: the stack's services (or none: ephemeral API)."""
    bin_dir = str(Path(sys.executable).parent)
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_"))
    }
    env = {**clean, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    # a loaded test machine can take longer than the default 20 s to start the ephemeral API
    slow_start = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    return {**env, **slow_start, **(stack_env or {}), "CI": "true", **extra}


def run_python(code: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON line last) and return that JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    )
    return json.loads(lines[-1])


def flow_run_code(module: str, function: str, **kwargs: Any) -> str:
    """Python that runs a flow, returning its final state and run id as a JSON line."""
    return (
        "import json\n"
        f"from {module} import {function}\n"
        f"state = {function}(**{kwargs!r}, return_state=True)\n"
        "print(json.dumps({'state': state.type.value, 'message': state.message,\n"
        "                  'flow_run_id': str(state.state_details.flow_run_id)}))\n"
    )


def api(prefect_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """POST (with ``body``) or GET ``<prefect_url>/api/<path>``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{prefect_url}/api/{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def task_runs(prefect_url: str, flow_run_ids: list[str]) -> list[dict[str, Any]]:
    """The task runs of these flow runs, in the order they started."""
    runs = api(
        prefect_url,
        "task_runs/filter",
        {"flow_runs": {"id": {"any_": flow_run_ids}}, "sort": "EXPECTED_START_TIME_ASC"},
    )
    return sorted(runs, key=lambda r: r["start_time"] or r["expected_start_time"] or "")


def child_flow_runs(prefect_url: str, parent_flow_run_id: str) -> list[str]:
    """Ids of the subflow runs started by the tasks of ``parent_flow_run_id``."""
    parents = {r["id"] for r in task_runs(prefect_url, [parent_flow_run_id])}
    runs = (
        api(
            prefect_url,
            "flow_runs/filter",
            {"flow_runs": {"parent_task_run_id": {"any_": list(parents)}}},
        )
        if parents
        else []
    )
    return [r["id"] for r in runs]
