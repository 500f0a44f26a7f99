"""`mlflow models serve` for tests: a scoring server on a free loopback port, and its requests."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def scoring_server(model_uri: str, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """`mlflow models serve -m model_uri` (one worker, this venv) until the block ends; its URL
    and process id. ``env`` is added to this process's environment."""
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
            ],
            env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow models serve did not start:\n{log.read_text()[-3000:]}")
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    """POST ``body`` (a dict is sent as JSON) to ``/invocations``: status and decoded answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def images_body(*items: bytes) -> dict:
    """A ``dataframe_split`` request with one base64 ``image`` per row."""
    encoded = [base64.b64encode(item).decode() for item in items]
    return {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}
