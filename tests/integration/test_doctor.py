"""`arcflow doctor`: every service checked for real; a failure names the service and the
setting to fix, in one line, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra.local.processes import free_port, running_server
from infra.local.stack import BUCKETS, Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    """A git + DVC checkout with the default DVC remote on S3 and one s3:// data source."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["sources"]["faces"] = {"uri": f"s3://{BUCKETS['data']}/faces.zip"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        [dvc, "remote", "add", "-d", "storage", f"s3://{BUCKETS['dvc']}/cache"],
    ):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def doctor(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_"))
    }
    full = {**clean, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(
        [sys.executable, "-m", "arcflow.cli", "doctor"],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_healthy_stack_passes_every_check(checkout: Path, local_stack: Stack) -> None:
    proc = doctor(checkout, local_stack.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["mlflow", "prefect", "s3", "s3"]
    assert all(line.startswith("ok") for line in lines)
    assert "DVC remote 'storage'" in lines[2] and "source faces" in lines[3]


def test_unreachable_services_name_the_setting_to_fix(checkout: Path, local_stack: Stack) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        **local_stack.env(),
        "MLFLOW_TRACKING_URI": nowhere,
        "PREFECT_API_URL": f"{nowhere}/api",
        "AWS_ENDPOINT_URL": nowhere,
    }
    proc = doctor(checkout, env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    failures = proc.stderr.splitlines()
    assert len(failures) == 4, proc.stderr
    mlflow, prefect, remote, source = failures
    assert mlflow.startswith("FAIL mlflow") and "cannot reach the server" in mlflow
    assert mlflow.endswith("fix MLFLOW_TRACKING_URI")
    assert prefect.startswith("FAIL prefect") and prefect.endswith("fix PREFECT_API_URL")
    assert "cannot reach the endpoint" in remote
    assert "remote.storage.endpointurl (.dvc/config.local) or AWS_ENDPOINT_URL" in remote
    assert "data.s3.endpoint_url (params.yaml) or AWS_ENDPOINT_URL" in source


def test_a_missing_bucket_names_where_the_bucket_is_configured(
    checkout: Path, local_stack: Stack
) -> None:
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run(
        [dvc, "remote", "modify", "storage", "url", "s3://no-such-bucket/cache"],
        cwd=checkout, check=True, capture_output=True,
    )  # fmt: skip
    proc = doctor(checkout, local_stack.env())
    assert proc.returncode == 1
    [failure] = proc.stderr.splitlines()
    assert "s3://no-such-bucket" in failure and "no such bucket" in failure
    assert failure.endswith("fix remote.storage.url (.dvc/config)")


@pytest.fixture(scope="module")
def strict_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server that checks credentials (it knows no access key at all)."""
    root = tmp_path_factory.mktemp("strict-s3")
    port = free_port()
    moto = str(Path(sys.executable).with_name("moto_server"))
    with running_server(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        f"http://127.0.0.1:{port}/moto-api/",
        root / "moto.log",
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"},
    ):
        yield f"http://127.0.0.1:{port}"


def test_rejected_credentials_name_the_credential_settings(
    checkout: Path, local_stack: Stack, strict_s3: str
) -> None:
    env = {**local_stack.env(), "AWS_ENDPOINT_URL": strict_s3, "AWS_ACCESS_KEY_ID": "wrong"}
    proc = doctor(checkout, env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    failures = proc.stderr.splitlines()
    assert len(failures) == 2  # the DVC remote and the data source; MLflow and Prefect are fine
    for line in failures:
        assert "credentials rejected (InvalidAccessKeyId)" in line
        assert line.endswith("fix AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
