"""infra/: the Docker Compose stack, its .env.example, images and helper scripts.

No Docker engine here: the compose file is read as YAML and checked against what the stack
promises (healthchecks, start order, loopback ports, no secrets in the file, pinned images);
the shell scripts run with fake `weed`, `aws` and `psql` commands on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

SERVICES = {
    "postgres",
    "objectstore",
    "create-buckets",
    "mlflow",
    "prefect-server",
    "worker",
    "trainer",
    "face-api",
}
ONE_SHOT = {"create-buckets"}
PUBLISHED = {"objectstore", "mlflow", "prefect-server", "face-api"}
BUCKET_DEFAULTS = {
    "S3_BUCKET_DATA": "arcflow-data",
    "S3_BUCKET_DVC": "arcflow-dvc",
    "S3_BUCKET_MLFLOW": "arcflow-mlflow",
}
# names of variables (and environment keys) that hold secrets
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_KEY_ID$")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
BARE_REFERENCE = re.compile(r"\$[A-Za-z_]")


@cache
def compose_text() -> str:
    return (INFRA / "docker-compose.yml").read_text()


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(compose_text())


@cache
def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate((INFRA / ".env.example").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f".env.example:{number}: {line}"
        assert name not in values, f".env.example defines {name} twice"
        values[name] = value
    return values


def references(text: str) -> list[re.Match[str]]:
    """Every ${...} that compose interpolates (`$$` is an escaped, literal dollar)."""
    return list(REFERENCE.finditer(text.replace("$$", "")))


def resolve(value: str, env: dict[str, str]) -> str:
    """Interpolate like compose does, for the forms this stack uses (`$$` stays a `$`)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        if op in (":-", "-"):
            use_default = current is None or (op == ":-" and current == "")
            return arg if use_default else current
        if op in (":?", "?"):
            assert current or (op == "?" and current is not None), f"{name} required: {arg}"
            return current
        assert op is None, f"unexpected ${{{name}{op}…}}"
        return current or ""

    return "$".join(REFERENCE.sub(one, part) for part in value.split("$$"))


def filled_env() -> dict[str, str]:
    """.env.example with every empty secret filled in, as a user would."""
    return {name: value or f"test-{name.lower()}" for name, value in env_example().items()}


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def command_text(service: str) -> str:
    command = services()[service]["command"]
    return " ".join(command) if isinstance(command, list) else command


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment must be a mapping"
    return env


# --- the compose file ---------------------------------------------------------------------


def test_stack_has_the_expected_services() -> None:
    assert set(services()) == SERVICES
    assert compose()["name"] == "arcflow"


def test_every_long_running_service_has_a_healthcheck() -> None:
    one_shot = {name for name, svc in services().items() if svc.get("restart") == "no"}
    assert one_shot == ONE_SHOT
    for name, svc in services().items():
        if name in ONE_SHOT:
            continue
        assert svc.get("restart") == "unless-stopped", name
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_healthchecks_probe_the_documented_endpoints() -> None:
    probes = {
        "postgres": "pg_isready",
        "objectstore": "http://127.0.0.1:8333/healthz",
        "mlflow": "http://127.0.0.1:5000/health",
        "prefect-server": "http://127.0.0.1:4200/api/health",
        "worker": "http://127.0.0.1:8080/health",
        "trainer": "http://127.0.0.1:8080/health",
        "face-api": "http://127.0.0.1:8080/ping",
    }
    for name, probe in probes.items():
        assert probe in " ".join(services()[name]["healthcheck"]["test"]), name
    for name in ("worker", "trainer"):  # the worker's health server listens only with this flag
        assert "--with-healthcheck" in command_text(name)


def test_depends_on_waits_for_health_and_for_the_bucket_job() -> None:
    expected = {
        "create-buckets": {"objectstore"},
        "mlflow": {"postgres", "objectstore", "create-buckets"},
        "prefect-server": {"postgres"},
        "worker": {"prefect-server", "mlflow", "create-buckets"},
        "trainer": {"prefect-server", "mlflow", "create-buckets"},
        "face-api": {"mlflow"},
    }
    for name, svc in services().items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert set(depends) == expected.get(name, set()), name
        for target, spec in depends.items():
            want = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert spec == {"condition": want}, f"{name} -> {target}"
            if want == "service_healthy":
                assert "healthcheck" in services()[target], target


def test_ports_are_published_on_the_configured_address_only() -> None:
    env = env_example()
    assert env["BIND_ADDRESS"] == "127.0.0.1"
    published = {name for name, svc in services().items() if svc.get("ports")}
    assert published == PUBLISHED  # not Postgres, not the unauthenticated filer/master ports
    for name in published:
        for port in services()[name]["ports"]:
            assert isinstance(port, str), name
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"
            host, host_port, container_port = resolve(port, env).split(":")
            assert host == "127.0.0.1"
            assert host_port.isdigit() and container_port.isdigit()
            assert re.search(r":\$\{[A-Z0-9_]+_PORT:-\d+\}:\d+$", port), f"{name}: {port}"


def test_named_volumes_are_declared_and_bind_mounts_exist() -> None:
    declared = set(compose()["volumes"])
    used = set()
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/", "~")):
                assert (INFRA / source).is_file(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    workspaces = {"worker-workspace", "trainer-workspace"}  # the workers' checkouts
    expected = {"postgres-data", "objectstore-data", "dvc-cache", "mlflow-auth", *workspaces}
    assert used == declared == expected


def test_env_example_defines_exactly_the_referenced_variables() -> None:
    text = compose_text()
    assert not BARE_REFERENCE.search(text.replace("$$", "")), "use ${NAME}, not $NAME"
    referenced = {m["name"] for m in references(text)}
    defined = set(env_example())
    assert referenced - defined == set(), "referenced but missing from .env.example"
    assert defined - referenced == set(), "defined in .env.example but never used"


def test_compose_defaults_agree_with_env_example() -> None:
    env = env_example()
    for match in references(compose_text()):
        if match["op"] == ":-":
            assert env[match["name"]] == match["arg"], match[0]
    for name, bucket in BUCKET_DEFAULTS.items():
        assert env[name] == bucket


def test_secrets_are_required_variables_without_values_in_the_example() -> None:
    env = env_example()
    secrets = {name for name in env if SECRET_NAME.search(name)}
    assert secrets == {
        "POSTGRES_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "PREFECT_DB_PASSWORD",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SECRET_KEY",
        "PREFECT_AUTH_PASSWORD",
    }
    for name in secrets:
        assert env[name] == "", f".env.example must not ship a value for {name}"
    for match in references(compose_text()):
        if match["name"] in secrets:
            assert match["op"] == ":?", f"{match[0]}: a secret needs ${{NAME:?message}}"
        else:
            assert match["op"] != ":?", f"{match[0]}: only secrets are required"


def test_no_secret_literals_in_the_compose_file() -> None:
    required = re.compile(r"\$\{[A-Z0-9_]+:\?[^}]*\}")
    for name in services():
        for key, value in environment(name).items():
            if SECRET_NAME.search(key):
                assert required.fullmatch(str(value)), f"{name}: {key} must come from infra/.env"
    # credentials inside connection URLs: both parts from variables, the password required
    text = compose_text()
    assert text.count("@postgres:5432/") == 2
    urls = [
        next(part for part in services()["mlflow"]["command"] if "postgresql+" in part),
        environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"],
    ]
    for url in urls:
        parts = re.search(r"://(\$\{[^}]+\}):(\$\{[^}]+\})@postgres:5432/(\$\{[^}]+\})$", url)
        assert parts, url
        assert required.fullmatch(parts[2]), url
    # nothing like `password: hunter2` / `SECRET_KEY=abc` outside a ${...} reference
    without_references = REFERENCE.sub("REF", text.replace("$$", ""))
    literal = re.compile(r"(?i)\b\w*(password|secret|_key)\w*\s*[:=]\s*(?!REF\b)[^\s#]")
    assert not literal.search(without_references), literal.search(without_references)


def test_no_minio_and_every_image_is_pinned() -> None:
    env = filled_env()
    for name, svc in services().items():
        image = resolve(svc["image"], env)
        assert "minio" not in image.lower(), name
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        if "build" not in svc:  # pulled images carry a version
            assert re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
    assert resolve(services()["objectstore"]["image"], env).startswith("chrislusf/seaweedfs:")
    assert re.fullmatch(
        r"prefecthq/prefect:3\.\d+\.\d+-python3\.\d+",
        resolve(services()["prefect-server"]["image"], env),
    )


def test_mlflow_server_uses_postgres_proxied_s3_artifacts_and_allowed_hosts() -> None:
    env = filled_env()
    command = resolve(command_text("mlflow"), env)
    assert command.startswith("mlflow server ")
    # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not psycopg2
    assert re.search(
        r"--backend-store-uri[= ]postgresql\+psycopg2://[^ ]+@postgres:5432/mlflow\b", command
    )
    assert re.search(r"--artifacts-destination[= ]s3://arcflow-mlflow/", command)
    assert "--default-artifact-root" not in command and "--no-serve-artifacts" not in command
    allowed = re.search(r"--allowed-hosts[= ](\S+)", command)
    assert allowed, command
    hosts = allowed[1].split(",")
    for host in ("localhost", "127.0.0.1", "mlflow", "mlflow:*", env["MLFLOW_PUBLIC_HOST"]):
        assert host in hosts, host
    assert "*" not in hosts
    assert "${MLFLOW_PUBLIC_HOST:-localhost}" in command_text("mlflow")
    assert environment("mlflow")["MLFLOW_S3_ENDPOINT_URL"] == "http://objectstore:8333"
    assert environment("mlflow")["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # no runners
    build = services()["mlflow"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).is_file()


def test_prefect_server_uses_postgres() -> None:
    command = command_text("prefect-server")
    assert re.search(r"prefect server start .*--host 0\.0\.0\.0", command)
    url = resolve(
        environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"], filled_env()
    )
    assert url.startswith("postgresql+asyncpg://prefect:")
    assert url.endswith("@postgres:5432/prefect")


def test_database_roles_and_names_match_what_postgres_creates() -> None:
    postgres = services()["postgres"]
    assert (
        "./postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-init-databases.sh:ro"
        in postgres["volumes"]
    )
    init_script = (INFRA / "postgres" / "init-databases.sh").read_text()
    urls = [
        next(part for part in services()["mlflow"]["command"] if "postgresql+" in part),
        environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"],
    ]
    for url in urls:
        found = references(url)
        assert len(found) == 3, url  # user, password, database
        for match in found:  # the same variable, with the same default, reaches Postgres
            assert environment("postgres")[match["name"]] == match[0]
            assert match["name"] in init_script


def test_bucket_job_creates_the_three_buckets() -> None:
    job = services()["create-buckets"]
    buckets = resolve(environment("create-buckets")["BUCKETS"], filled_env()).split()
    assert buckets == list(BUCKET_DEFAULTS.values())
    assert environment("create-buckets")["AWS_ENDPOINT_URL"] == "http://objectstore:8333"
    assert job["entrypoint"][-1] == "/etc/arcflow/create-buckets.sh"


def test_workers_run_the_training_image_against_the_stack() -> None:
    for name, pool in (("worker", "arcflow"), ("trainer", "arcflow-gpu")):
        svc = services()[name]
        assert svc["build"]["context"] == ".."
        assert svc["build"]["dockerfile"] == "infra/Dockerfile"
        assert (INFRA / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        command = resolve(command_text(name), filled_env())
        assert re.search(rf"prefect worker start --pool {pool} --type process\b", command)
        env = environment(name)
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["AWS_ENDPOINT_URL"] == "http://objectstore:8333"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    # only the trainer asks for GPUs, so the default stack starts on any host
    assert "deploy" not in services()["worker"] and "profiles" not in services()["worker"]
    trainer = services()["trainer"]
    assert trainer["profiles"] == ["gpu"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def yaml_keys(node: yaml.Node) -> dict[str, yaml.Node]:
    assert isinstance(node, yaml.MappingNode)
    return {key.value: value for key, value in node.value}


def test_worker_and_trainer_share_one_image_through_the_anchor() -> None:
    """One image for both workers: `build` and `image` come only from x-worker."""
    top = yaml_keys(yaml.compose(compose_text()))
    anchor = top["x-worker"]
    assert {"build", "image"} <= set(yaml_keys(anchor))
    compose_services = yaml_keys(top["services"])
    for name in ("worker", "trainer"):
        own = yaml_keys(compose_services[name])
        assert own["<<"] is anchor, f"{name} must merge the x-worker anchor"
        assert not {"build", "image"} & set(own), f"{name} must not override the image"
    worker, trainer = services()["worker"], services()["trainer"]
    assert worker["build"] == trainer["build"]
    assert resolve(worker["image"], filled_env()) == resolve(trainer["image"], filled_env())
    assert resolve(worker["image"], filled_env()) == "arcflow-trainer:local"


def test_each_worker_keeps_its_checkout_on_a_named_volume() -> None:
    """/workspace (code, data, models, dvc.lock) outlives the container and the image; each
    worker has its own checkout (never two `dvc` processes in one), the DVC cache is shared."""
    declared = set(compose()["volumes"])
    mounts: dict[str, dict[str, str]] = {}
    for name in ("worker", "trainer"):
        volumes = services()[name]["volumes"]
        assert all(isinstance(v, str) and v.count(":") == 1 for v in volumes), name
        mounts[name] = {target: source for source, target in (v.split(":") for v in volumes)}
        assert set(mounts[name]) == {"/workspace", "/workspace/.dvc/cache"}, name
        assert mounts[name]["/workspace"] in declared, f"{name}: /workspace is not a named volume"
        assert mounts[name]["/workspace/.dvc/cache"] == "dvc-cache"
        assert environment(name)["ARCFLOW_WORKSPACE_UPDATE"] == (
            "${ARCFLOW_WORKSPACE_UPDATE:-ff-only}"
        )
    assert mounts["worker"]["/workspace"] != mounts["trainer"]["/workspace"]
    assert env_example()["ARCFLOW_WORKSPACE_UPDATE"] == "ff-only"
    # the image makes both mount points for its user: the volumes start out writable by it
    dockerfile = (INFRA / "Dockerfile").read_text()
    made = re.search(r"install -d -o arcflow -g arcflow ([^\n]+)", dockerfile)
    assert made and {"/workspace", "/workspace/.dvc/cache"} <= set(made[1].split())


# --- scripts ------------------------------------------------------------------------------


def fake_command(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_script(
    shell: str, script: Path, bin_dir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    full_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(
        [shell, str(script)],
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_objectstore_entrypoint_writes_the_identity_and_starts_weed(tmp_path: Path) -> None:
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir()
    data.mkdir()
    fake_command(
        bin_dir, "weed", f'pwd > "{tmp_path}/cwd"\nprintf "%s\\n" "$@" > "{tmp_path}/args"\n'
    )
    config = tmp_path / "s3.json"
    result = run_script(
        "sh",
        INFRA / "objectstore" / "entrypoint.sh",
        bin_dir,
        {
            "S3_ACCESS_KEY": "arcflow-key",
            "S3_SECRET_KEY": "s3cr3t/with+slash=",
            "SEAWEEDFS_DATA_DIR": str(data),
            "SEAWEEDFS_S3_CONFIG": str(config),
        },
    )
    assert result.returncode == 0, result.stderr
    identities = json.loads(config.read_text())["identities"]
    assert identities == [
        {
            "name": "arcflow",
            "credentials": [{"accessKey": "arcflow-key", "secretKey": "s3cr3t/with+slash="}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
    ]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    args = (tmp_path / "args").read_text().split()
    assert args[0] == "server"
    assert {"-s3", "-s3.port=8333", f"-s3.config={config}", f"-dir={data}"} <= set(args)
    assert (tmp_path / "cwd").read_text().strip() == str(data)


def test_objectstore_entrypoint_refuses_keys_that_would_break_the_json(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "weed", f'touch "{tmp_path}/started"\n')
    result = run_script(
        "sh",
        INFRA / "objectstore" / "entrypoint.sh",
        bin_dir,
        {
            "S3_ACCESS_KEY": "key",
            "S3_SECRET_KEY": 'bad"secret',
            "SEAWEEDFS_DATA_DIR": str(tmp_path),
            "SEAWEEDFS_S3_CONFIG": str(tmp_path / "s3.json"),
        },
    )
    assert result.returncode == 64
    assert "S3_SECRET_KEY" in result.stderr
    assert not (tmp_path / "started").exists()


def fake_aws(tmp_path: Path, existing: str, failures_before_create: int) -> Path:
    """`aws s3api`: `existing` has a bucket already; creating fails N times, then works."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, count = tmp_path / "calls", tmp_path / "failures"
    count.write_text("0")
    fake_command(
        bin_dir,
        "aws",
        f"""echo "$2 $4" >> "{log}"
case "$2" in
  head-bucket) [ "$4" = "{existing}" ] ;;
  create-bucket)
    n=$(cat "{count}")
    if [ "$n" -lt {failures_before_create} ]; then echo $((n + 1)) > "{count}"; exit 255; fi ;;
esac
""",
    )
    return bin_dir


def test_create_buckets_skips_existing_buckets_and_retries(tmp_path: Path) -> None:
    bin_dir = fake_aws(tmp_path, existing="arcflow-dvc", failures_before_create=2)
    result = run_script(
        "sh",
        INFRA / "objectstore" / "create-buckets.sh",
        bin_dir,
        {"BUCKETS": "arcflow-data arcflow-dvc arcflow-mlflow", "CREATE_BUCKETS_DELAY_S": "0"},
    )
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [
        "head-bucket arcflow-data",
        "create-bucket arcflow-data",  # fails
        "head-bucket arcflow-data",
        "create-bucket arcflow-data",  # fails
        "head-bucket arcflow-data",
        "create-bucket arcflow-data",
        "head-bucket arcflow-dvc",  # exists
        "head-bucket arcflow-mlflow",
        "create-bucket arcflow-mlflow",
    ]
    assert result.stdout.count("ready") == 3


def test_create_buckets_fails_after_its_attempts(tmp_path: Path) -> None:
    bin_dir = fake_aws(tmp_path, existing="none", failures_before_create=100)
    result = run_script(
        "sh",
        INFRA / "objectstore" / "create-buckets.sh",
        bin_dir,
        {"BUCKETS": "arcflow-data", "CREATE_BUCKETS_ATTEMPTS": "3", "CREATE_BUCKETS_DELAY_S": "0"},
    )
    assert result.returncode == 1
    assert "could not create arcflow-data after 3 attempts" in result.stderr
    assert (tmp_path / "calls").read_text().count("create-bucket") == 3


def test_init_databases_hands_names_and_passwords_to_psql_as_variables(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "psql"
    fake_command(bin_dir, "psql", f'echo "ARGS $*" >> "{log}"\ncat >> "{log}"\necho >> "{log}"\n')
    password = "pa'ss;DROP"
    result = run_script(
        "bash",
        INFRA / "postgres" / "init-databases.sh",
        bin_dir,
        {
            "POSTGRES_USER": "postgres",
            "MLFLOW_DB_NAME": "mlflow",
            "MLFLOW_DB_USER": "mlflow",
            "MLFLOW_DB_PASSWORD": password,
            "PREFECT_DB_NAME": "prefect",
            "PREFECT_DB_USER": "prefect",
            "PREFECT_DB_PASSWORD": "other",
        },
    )
    assert result.returncode == 0, result.stderr
    calls = [call for call in log.read_text().split("ARGS ") if call]
    assert len(calls) == 3
    mlflow, prefect, extension = calls
    assert f"--set=role=mlflow --set=password={password} --set=db=mlflow" in mlflow
    assert "--set=role=prefect --set=password=other --set=db=prefect" in prefect
    for call in (mlflow, prefect):
        assert "-v ON_ERROR_STOP=1" in call
        sql = call.split("\n", 1)[1]
        assert "CREATE ROLE :\"role\" LOGIN PASSWORD :'password';" in sql
        assert 'CREATE DATABASE :"db" OWNER :"role";' in sql
        assert password not in sql
    assert "--dbname prefect" in extension and "CREATE EXTENSION IF NOT EXISTS pg_trgm" in extension


def test_init_databases_stops_when_a_variable_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "psql", f'touch "{tmp_path}/called"\n')
    result = run_script(
        "bash", INFRA / "postgres" / "init-databases.sh", bin_dir, {"POSTGRES_USER": "postgres"}
    )
    assert result.returncode != 0
    assert "MLFLOW_DB_NAME" in result.stderr
    assert not (tmp_path / "called").exists()


def test_face_api_entrypoint_waits_for_the_model_then_serves_it(tmp_path: Path) -> None:
    """The registry has no champion for the first two checks: the script waits, then execs
    `mlflow models serve` of the model on 0.0.0.0:8080."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "checks"
    fake_command(
        bin_dir,
        "python",
        f'cat > /dev/null\necho x >> "{count}"\n[ "$(wc -l < "{count}")" -ge 3 ] || exit 1\n',
    )
    fake_command(bin_dir, "sleep", "exit 0\n")
    fake_command(bin_dir, "mlflow", f'printf "%s\\n" "$@" > "{tmp_path}/args"\n')
    result = run_script(
        "sh",
        INFRA / "face-api" / "entrypoint.sh",
        bin_dir,
        {"FACE_MODEL_URI": "models:/faces@champion", "FACE_API_WORKERS": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("waiting 30s for models:/faces@champion") == 2
    assert "serving models:/faces@champion" in result.stderr
    args = (tmp_path / "args").read_text().split()
    assert args[:4] == ["models", "serve", "-m", "models:/faces@champion"]
    assert {"--env-manager", "local", "0.0.0.0", "8080"} <= set(args)
    assert args[args.index("-w") + 1] == "3"


def test_mlflow_and_prefect_require_logins_and_every_client_has_one() -> None:
    """#17: MLflow runs its basic-auth app (users on their own volume, nobody sees anything
    without a grant), Prefect its server auth string; the worker and the face API log in."""
    import configparser

    assert "--app-name=basic-auth" in services()["mlflow"]["command"]
    mlflow_env = environment("mlflow")
    assert mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    ini = configparser.ConfigParser()
    ini.read(INFRA / "mlflow" / "basic_auth.ini")
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert ini["mlflow"]["database_uri"] == "sqlite:////var/lib/mlflow-auth/basic_auth.db"
    assert "admin_password" not in ini["mlflow"]  # from the environment only
    auth_string = "${PREFECT_AUTH_USER:-arcflow}:${PREFECT_AUTH_PASSWORD:?"
    assert environment("prefect-server")["PREFECT_SERVER_API_AUTH_STRING"].startswith(auth_string)
    for client in ("worker", "trainer", "face-api"):
        env = environment(client)
        assert env["MLFLOW_TRACKING_USERNAME"] == "${MLFLOW_ADMIN_USER:-admin}", client
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?"), client
        if client != "face-api":
            assert env["PREFECT_API_AUTH_STRING"].startswith(auth_string), client
