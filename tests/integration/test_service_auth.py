"""Attack: a stranger on the network calls the tracking server or the Prefect API. With the
compose stack's settings (MLflow's basic-auth app and infra/mlflow/basic_auth.ini, Prefect's
server auth string), real servers answer 401 without the login and work with it; their health
probes stay open."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infra.local.processes import free_port, running_server
from infra.local.stack import MLFLOW_NO_JOBS
from tests.conftest import ROOT

pytestmark = [pytest.mark.attack, pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _call(url: str, body: dict | None = None, login: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if login is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_mlflow_with_the_compose_auth_settings_refuses_strangers(tmp_path: Path) -> None:
    ini = (ROOT / "infra" / "mlflow" / "basic_auth.ini").read_text()
    config = tmp_path / "basic_auth.ini"
    config.write_text(ini.replace("sqlite:////var/lib/mlflow-auth/", f"sqlite:///{tmp_path}/"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-test-password",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-csrf-key",
        **MLFLOW_NO_JOBS,  # as compose
    }
    cmd = [str(BIN / "mlflow"), "server", "--app-name=basic-auth", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db"]  # fmt: skip
    with running_server(cmd, f"{url}/health", tmp_path / "mlflow.log", env=env):
        search = f"{url}/api/2.0/mlflow/registered-models/search"
        assert _call(search) == 401
        assert _call(search, login="admin:wrong") == 401
        assert _call(search, login="admin:a-long-test-password") == 200
        create = f"{url}/api/2.0/mlflow/registered-models/create"
        assert _call(create, {"name": "arcface"}) == 401  # no model moved past the gates


def test_prefect_with_the_compose_auth_string_refuses_strangers(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_AUTH_STRING": "arcflow:another-test-password",
    }
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--analytics-off"]  # fmt: skip
    with running_server(cmd, f"{url}/api/health", tmp_path / "prefect.log", env=env):
        runs = f"{url}/api/flow_runs/filter"
        assert _call(runs, {}) == 401
        assert _call(runs, {}, login="arcflow:wrong") == 401
        assert _call(runs, {}, login="arcflow:another-test-password") == 200
