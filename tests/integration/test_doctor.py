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
    remote, source = failures
    assert remote.endswith(
        "fix AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
        "or remote.storage.access_key_id / secret_access_key (dvc remote modify --local)"
    )
    assert source.endswith("fix AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")


def dvc_local(checkout: Path, *settings: tuple[str, str]) -> None:
    """``dvc remote modify --local storage KEY VALUE``: .dvc/config.local, as the docs say."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    for key, value in settings:
        subprocess.run(
            [dvc, "remote", "modify", "--local", "storage", key, value],
            cwd=checkout, check=True, capture_output=True,
        )  # fmt: skip


def no_aws_env(stack: Stack, home: Path) -> dict[str, str]:
    """The stack's MLflow and Prefect, but no AWS_* credentials or endpoint, and no ~/.aws or
    instance role to fall back on: any S3 credential must come from the DVC config."""
    return {
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "PREFECT_API_URL": f"{stack.prefect_url}/api",
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_the_dvc_remote_uses_the_keys_of_config_local(
    checkout: Path, local_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = no_aws_env(local_stack, tmp_path_factory.mktemp("home"))
    dvc_local(checkout, ("endpointurl", local_stack.s3_url), ("region", "us-east-1"))
    before = doctor(checkout, env)
    [remote, source] = before.stderr.splitlines()
    assert remote.startswith("FAIL s3") and "DVC remote 'storage'" in remote
    assert "no credentials" in remote
    assert remote.endswith(
        "or remote.storage.access_key_id / secret_access_key (dvc remote modify --local)"
    )

    dvc_local(checkout, ("access_key_id", "config-local-key"), ("secret_access_key", "s3cret"))
    after = doctor(checkout, env)
    assert after.returncode == 1, after.stdout + after.stderr
    remote = next(line for line in after.stdout.splitlines() if "DVC remote" in line)
    assert remote.startswith("ok   s3") and f"at {local_stack.s3_url}" in remote
    assert remote.endswith("bucket reachable with the keys of remote.storage (DVC config)")
    # the data source reads the environment, which has no credentials
    [source] = after.stderr.splitlines()
    assert "source faces" in source and "no credentials" in source
    assert "s3cret" not in after.stdout + after.stderr


def test_rejected_config_local_keys_name_the_dvc_setting(
    checkout: Path, local_stack: Stack, strict_s3: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = no_aws_env(local_stack, tmp_path_factory.mktemp("home"))
    dvc_local(
        checkout,
        ("endpointurl", strict_s3),
        ("access_key_id", "unknown-to-this-server"),
        ("secret_access_key", "s3cret"),
    )
    proc = doctor(checkout, env)
    remote = next(line for line in proc.stderr.splitlines() if "DVC remote" in line)
    assert f"at {strict_s3}" in remote and "credentials rejected (InvalidAccessKeyId)" in remote
    assert remote.endswith(
        "fix remote.storage.access_key_id / secret_access_key (dvc remote modify --local)"
    )


def test_an_unreadable_dvc_config_is_one_failed_check(checkout: Path, local_stack: Stack) -> None:
    (checkout / ".dvc" / "config.local").write_text('[remote "storage"\nurl = \n')
    proc = doctor(checkout, local_stack.env())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [failure] = proc.stderr.splitlines()
    assert failure.startswith("FAIL dvc") and "DVC config file error" in failure
    assert failure.endswith("(dvc config --list --show-origin)")
