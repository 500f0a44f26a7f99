"""The service stack without Docker, for development and CI.

An S3 endpoint (moto in server mode), an MLflow tracking server (SQLite backend, artifacts
proxied to the S3 endpoint) and a Prefect server, on free loopback ports, health-checked, with
their logs and state in one folder. ``up`` leaves them running and writes ``stack.json`` and
``stack.env`` (the environment that points ArcFlow at them); ``down`` stops them.

    python -m infra.local.stack up [--dir .services]     # make services-up
    source .services/stack.env
    python -m infra.local.stack down [--dir .services]   # make services-down
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infra.local.processes import (
    alive,
    differences,
    free_port,
    healthy,
    identity,
    start,
    stop,
    wait_healthy,
)

DEFAULT_DIR = Path(".services")
BUCKETS = {"data": "arcflow-data", "dvc": "arcflow-dvc", "mlflow": "arcflow-mlflow"}
# moto accepts any credentials; these only have to be present for the AWS clients.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "arcflow-local",
    "AWS_SECRET_ACCESS_KEY": "arcflow-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# MLflow 3 starts job-runner processes (huey consumers) for GenAI scorers, which ArcFlow never
# submits: seven processes importing MLflow (~3 s of CPU each) at every server start.
MLFLOW_NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class Stack:
    """Where the services of a running stack listen, and their process ids."""

    root: str
    s3_url: str
    mlflow_url: str
    prefect_url: str
    pids: dict[str, int] = field(default_factory=dict)
    identities: dict[str, dict[str, str]] = field(default_factory=dict)  # boot, start, cmdline
    buckets: dict[str, str] = field(default_factory=lambda: dict(BUCKETS))

    @property
    def health_urls(self) -> dict[str, str]:
        return {
            "s3": f"{self.s3_url}/moto-api/",
            "mlflow": f"{self.mlflow_url}/health",
            "prefect": f"{self.prefect_url}/api/health",
        }

    def env(self) -> dict[str, str]:
        """The environment that points ArcFlow, DVC, MLflow, Prefect and boto3 at the stack."""
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.s3_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "PREFECT_API_URL": f"{self.prefect_url}/api",
        }

    def s3_client(self):
        """A boto3 S3 client for the stack's endpoint."""
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, **_boto_credentials())

    def unhealthy(self) -> list[str]:
        """The services that are not answering."""
        return [name for name, url in self.health_urls.items() if not healthy(url)]


def _state_file(root: Path) -> Path:
    return root / "stack.json"


def load(root: Path = DEFAULT_DIR) -> Stack | None:
    """The stack recorded in ``root`` if all of its services answer, else None."""
    try:
        stack = Stack(**json.loads(_state_file(root).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return None if stack.unhealthy() else stack


def _create_buckets(stack: Stack) -> None:
    s3 = stack.s3_client()
    for bucket in stack.buckets.values():
        s3.create_bucket(Bucket=bucket)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def up(root: Path = DEFAULT_DIR, *, timeout: float = 180.0) -> Stack:
    """Start the three services (or return the healthy stack already running in ``root``)."""
    running = load(root)
    if running is not None:
        return running
    down(root)  # a stale record: stop whatever of it is left
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    ports = {name: free_port() for name in ("s3", "mlflow", "prefect")}
    stack = Stack(
        root=str(root),
        s3_url=f"http://127.0.0.1:{ports['s3']}",
        mlflow_url=f"http://127.0.0.1:{ports['mlflow']}",
        prefect_url=f"http://127.0.0.1:{ports['prefect']}",
    )
    commands = {
        "s3": ([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(ports["s3"])], {}),
        "mlflow": (
            [
                str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1",
                "--port", str(ports["mlflow"]), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination", f"s3://{stack.buckets['mlflow']}/",
            ],
            {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": stack.s3_url, **MLFLOW_NO_JOBS},
        ),
        "prefect": (
            [
                str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                "--port", str(ports["prefect"]), "--analytics-off",
            ],
            {
                "PREFECT_HOME": str(root / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # schedule a new deployment's runs within seconds, not a minute
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            },
        ),
    }  # fmt: skip
    started = []
    try:
        for name, (cmd, env) in commands.items():
            log = root / "logs" / f"{name}.log"
            proc = start(cmd, log, env)
            started.append(proc.pid)
            wait_healthy(proc, stack.health_urls[name], log, name=name, timeout=timeout)
            # Read once it serves: right after Popen returns, some kernels (gVisor) can still
            # show the forking parent's command line, and the record would never match again.
            stack.pids[name] = proc.pid
            stack.identities[name] = identity(proc.pid) or {}
            _state_file(root).write_text(json.dumps(asdict(stack), indent=2))
            if name == "s3":
                _create_buckets(stack)  # before MLflow proxies artifacts into one
    except BaseException:
        for pid in reversed(started):  # our own children: no record needed to know them
            stop(pid)
        _state_file(root).unlink(missing_ok=True)
        raise
    (root / "stack.env").write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(stack.env().items()))
    )
    return stack


def down(root: Path = DEFAULT_DIR) -> list[str]:
    """Stop every service recorded in ``root``; returns the names that were running."""
    try:
        record = json.loads(_state_file(root).read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    identities = record.get("identities", {})
    for name, pid in reversed(list(record.get("pids", {}).items())):
        if not alive(pid):
            continue
        changed = differences(pid, identities.get(name))  # a reboot or time reused the number
        if changed:
            print(
                f"{name}: pid {pid} is another process now (its {', '.join(changed)} differ);"
                " not signalled",
                file=sys.stderr,
            )
            continue
        stop(pid)
        stopped.append(name)
    _state_file(root).unlink(missing_ok=True)
    (root / "stack.env").unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state, logs and data")
    args = p.parse_args(argv)
    if args.action == "down":
        stopped = down(args.dir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.action == "status":
        stack = load(args.dir)
        print("not running" if stack is None else json.dumps(asdict(stack), indent=2))
        return 0 if stack is not None else 1
    try:
        stack = up(args.dir)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"S3 (moto)  {stack.s3_url}   buckets: {', '.join(stack.buckets.values())}")
    print(f"MLflow     {stack.mlflow_url}   artifacts -> s3://{stack.buckets['mlflow']}/")
    print(f"Prefect    {stack.prefect_url}")
    print(f"logs       {Path(stack.root) / 'logs'}")
    print(f"environment: source {args.dir / 'stack.env'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
