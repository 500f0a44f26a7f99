"""Can ArcFlow reach its services? One check per service, naming the setting to fix.

``arcflow doctor`` runs them: the MLflow tracking server, the Prefect API, and every S3 bucket
the configuration uses (the DVC remote, ``s3://`` data sources). A failure says which service,
what went wrong (unreachable, credentials rejected, no such bucket) and which setting decides it.
The DVC remote is read as DVC reads it (every config level, ``.dvc/config.local`` included) and
checked with its own endpoint, region, profile and keys.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcflow.config import DataParams
from arcflow.data.sources.spec import S3Options
from arcflow.errors import ConfigError, first_line

CREDENTIAL_SETTINGS = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


@dataclass(frozen=True)
class ServiceCheck:
    """The outcome of one check: ``setting`` is what to change when it failed."""

    service: str
    target: str
    ok: bool
    detail: str
    setting: str = ""

    def line(self) -> str:
        head = f"{'ok' if self.ok else 'FAIL':<5}{self.service:<10}{self.target}"
        if self.ok:
            return f"{head}: {self.detail}"
        return f"{head}: {self.detail}; fix {self.setting}"


def _get(url: str, timeout: float) -> tuple[int | None, str]:
    """(HTTP status or None when unreachable, a short reason)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), "ok"
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.reason)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, str(reason)


def check_mlflow(
    uri: str, *, setting: str = "MLFLOW_TRACKING_URI", timeout: float = 5.0
) -> ServiceCheck:
    """A tracking server answers ``/health`` and lists experiments; a local store is fine."""
    if not uri.startswith(("http://", "https://")):
        return ServiceCheck("mlflow", uri, True, "local store (no server needed)")
    status, reason = _get(uri.rstrip("/") + "/health", timeout)
    if status is None:
        return ServiceCheck("mlflow", uri, False, f"cannot reach the server ({reason})", setting)
    if status != 200:
        return ServiceCheck("mlflow", uri, False, f"/health answered {status} {reason}", setting)
    status, reason = _get(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1", timeout
    )
    if status in (401, 403):
        return ServiceCheck(
            "mlflow",
            uri,
            False,
            f"access refused ({status})",
            "MLFLOW_TRACKING_USERNAME / _PASSWORD",
        )
    if status != 200:
        detail = f"the tracking API answered {status} {reason}"
        return ServiceCheck(
            "mlflow", uri, False, detail, setting + " (or the server's --allowed-hosts)"
        )
    return ServiceCheck("mlflow", uri, True, "tracking server answers")


def check_prefect(api_url: str | None, *, timeout: float = 5.0) -> ServiceCheck:
    """The Prefect API answers ``/health``; unset means Prefect's ephemeral API (fine)."""
    if not api_url:
        return ServiceCheck("prefect", "(ephemeral)", True, "PREFECT_API_URL unset: local API")
    status, reason = _get(api_url.rstrip("/") + "/health", timeout)
    if status == 200:
        return ServiceCheck("prefect", api_url, True, "API answers")
    detail = f"cannot reach the API ({reason})" if status is None else f"/health answered {status}"
    return ServiceCheck("prefect", api_url, False, detail, "PREFECT_API_URL")


@dataclass(frozen=True)
class S3Keys:
    """An access key pair (and optional session token) set explicitly, and where it was set."""

    access_key_id: str | None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    origin: str = "explicit keys"

    def client_kwargs(self) -> dict[str, str | None]:
        """The keys as ``boto3`` client arguments (a key without its secret is an error there)."""
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "aws_session_token": self.session_token,
        }


@dataclass(frozen=True)
class S3Settings:
    """The settings to name when an S3 check fails, one per kind of failure."""

    endpoint: str = "AWS_ENDPOINT_URL"
    bucket: str = "the bucket name"
    credentials: str = CREDENTIAL_SETTINGS
    profile: str = "AWS_PROFILE"


#: What boto3's credential chain calls its sources (``Credentials.method``), in words.
_CHAIN_ORIGINS = {
    "env": "credentials from AWS_* variables",
    "shared-credentials-file": "credentials from the AWS credentials file",
    "config-file": "credentials from the AWS config file",
    "iam-role": "the instance role's credentials",
    "container-role": "the container role's credentials",
}


def _chain_origin(session: Any) -> str:
    """Where the AWS credential chain found the credentials ``session`` signs with."""
    found = session.get_credentials()
    method = getattr(found, "method", None) or "unknown"
    return _CHAIN_ORIGINS.get(method, f"credentials from the AWS chain ({method})")


def check_s3(
    bucket: str,
    *,
    options: S3Options | None = None,
    keys: S3Keys | None = None,
    settings: S3Settings | None = None,
    role: str = "",
    timeout: float = 5.0,
) -> ServiceCheck:
    """List one key of ``bucket``: reachable, credentials accepted, bucket exists.

    ``keys`` (a DVC remote's) take precedence over the environment / AWS config chain, as
    they do in DVC; without them the chain (``AWS_*``, ``options.profile``, ~/.aws) decides.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    from arcflow.data.sources.s3 import AUTH_CODES

    options = options or S3Options()
    settings = settings or S3Settings()
    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    target = f"s3://{bucket}" + (f" at {endpoint}" if endpoint != "AWS" else "")
    target += f" ({role})" if role else ""
    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    try:
        session = boto3.Session(profile_name=options.profile)
        client = session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region,
            config=config,
            **(keys.client_kwargs() if keys else {}),
        )
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except ProfileNotFound as exc:
        return ServiceCheck("s3", target, False, f"AWS profile not found ({exc})", settings.profile)
    except EndpointConnectionError as exc:
        detail = f"cannot reach the endpoint ({exc})"
        return ServiceCheck("s3", target, False, detail, settings.endpoint)
    except (NoCredentialsError, PartialCredentialsError) as exc:
        return ServiceCheck("s3", target, False, f"no credentials ({exc})", settings.credentials)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in AUTH_CODES or code == "403":
            detail = f"credentials rejected ({code})"
            return ServiceCheck("s3", target, False, detail, settings.credentials)
        if code in ("NoSuchBucket", "404"):
            return ServiceCheck("s3", target, False, "no such bucket", settings.bucket)
        return ServiceCheck("s3", target, False, f"S3 error {code}", settings.endpoint)
    except BotoCoreError as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return ServiceCheck("s3", target, False, detail, settings.endpoint)
    origin = keys.origin if keys else _chain_origin(session)
    return ServiceCheck("s3", target, True, f"bucket reachable with {origin}")


@dataclass(frozen=True)
class DvcRemote:
    """The default DVC remote as DVC merges its config levels (system, global, ``.dvc/config``
    and ``.dvc/config.local``, where ``dvc remote modify --local`` writes credentials)."""

    name: str
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    keys: S3Keys | None = None


def dvc_remote(root: Path) -> DvcRemote | None:
    """The default remote of the DVC repository at or above ``root``, read with DVC's own
    config loader; None outside a DVC repository or without a default remote."""
    from dvc.config import Config
    from dvc.config import ConfigError as DvcConfigError
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        config = Config(dvc_dir=Repo.find_dvc_dir(os.fspath(root)))
    except NotDvcRepoError:
        return None
    except DvcConfigError as exc:
        raise ConfigError(
            f"DVC {first_line(exc)}",
            hint="fix .dvc/config or .dvc/config.local (dvc config --list --show-origin)",
        ) from None
    name = config["core"].get("remote")
    if not name:
        return None
    section = config["remote"].get(name)
    if section is None:
        raise ConfigError(
            f"DVC core.remote is '{name}' but no remote has that name",
            hint="dvc remote list; dvc remote default <name>",
        )
    keys = None
    if any(section.get(key) for key in ("access_key_id", "secret_access_key", "session_token")):
        keys = S3Keys(
            section.get("access_key_id"),
            section.get("secret_access_key"),
            section.get("session_token"),
            origin=f"the keys of remote.{name} (DVC config)",
        )
    return DvcRemote(
        name,
        str(section["url"]),
        section.get("endpointurl"),
        section.get("region"),
        section.get("profile"),
        keys,
    )


def check_dvc_remote(root: Path, *, timeout: float = 5.0) -> ServiceCheck | None:
    """The default DVC remote's check when it is on S3 (None: no remote, or not on S3), with
    the endpoint, region, profile and keys DVC would use."""
    from arcflow.data.sources.s3 import parse_uri

    try:
        remote = dvc_remote(root)
    except ConfigError as exc:
        return ServiceCheck("dvc", "config", False, str(exc), exc.hint)
    if remote is None or not remote.url.startswith("s3://"):
        return None
    name = remote.name
    local_keys = f"remote.{name}.access_key_id / secret_access_key (dvc remote modify --local)"
    settings = S3Settings(
        endpoint=f"remote.{name}.endpointurl (.dvc/config.local) or AWS_ENDPOINT_URL",
        bucket=f"remote.{name}.url (.dvc/config)",
        credentials=local_keys if remote.keys else f"{CREDENTIAL_SETTINGS}, or {local_keys}",
        profile=f"remote.{name}.profile or AWS_PROFILE",
    )
    return check_s3(
        parse_uri(remote.url)[0],
        options=S3Options(
            endpoint_url=remote.endpoint_url, region=remote.region, profile=remote.profile
        ),
        keys=remote.keys,
        settings=settings,
        role=f"DVC remote '{name}'",
        timeout=timeout,
    )


def configured_checks(
    data: DataParams, mlflow_uri: str, prefect_url: str | None, dvc_root: Path | None
) -> list[ServiceCheck]:
    """MLflow, Prefect, the default DVC remote of the repository at ``dvc_root`` (None: no
    DVC check), then every s3:// data source."""
    from arcflow.data.sources.s3 import parse_uri

    checks = [check_mlflow(mlflow_uri), check_prefect(prefect_url)]
    remote = None if dvc_root is None else check_dvc_remote(dvc_root)
    if remote is not None:
        checks.append(remote)
    for name, source in data.sources.items():
        if source.uri.startswith("s3://"):
            settings = S3Settings(
                endpoint="data.s3.endpoint_url (params.yaml) or AWS_ENDPOINT_URL",
                bucket=f"data.sources.{name}.uri (params.yaml)",
                profile="data.s3.profile (params.yaml) or AWS_PROFILE",
            )
            checks.append(
                check_s3(
                    parse_uri(source.uri)[0],
                    options=S3Options(**data.s3.model_dump()),
                    settings=settings,
                    role=f"source {name}",
                )
            )
    return checks
