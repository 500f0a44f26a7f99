"""Can ArcFlow reach its services? One check per service, naming the setting to fix.

``arcflow doctor`` runs them: the MLflow tracking server, the Prefect API, and every S3 bucket
the configuration uses (the DVC remote, ``s3://`` data sources). A failure says which service,
what went wrong (unreachable, credentials rejected, no such bucket) and which setting decides it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from arcflow.config import DataParams
from arcflow.data.sources.spec import RetryPolicy, S3Options
from arcflow.errors import SourceError

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


def check_s3(
    bucket: str,
    *,
    options: S3Options | None = None,
    endpoint_setting: str = "AWS_ENDPOINT_URL",
    bucket_setting: str = "the bucket name",
    role: str = "",
    timeout: float = 5.0,
) -> ServiceCheck:
    """List one key of ``bucket``: reachable, credentials accepted, bucket exists."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    from arcflow.data.sources.s3 import AUTH_CODES, make_client

    options = options or S3Options()
    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    target = f"s3://{bucket}" + (f" at {endpoint}" if endpoint != "AWS" else "")
    target += f" ({role})" if role else ""
    try:
        client = make_client(options, RetryPolicy(attempts=1, timeout_s=timeout))
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except SourceError as exc:  # an AWS profile that does not exist
        return ServiceCheck("s3", target, False, str(exc), "AWS_PROFILE / data.s3.profile")
    except EndpointConnectionError as exc:
        return ServiceCheck(
            "s3", target, False, f"cannot reach the endpoint ({exc})", endpoint_setting
        )
    except (NoCredentialsError, PartialCredentialsError) as exc:
        return ServiceCheck("s3", target, False, f"no credentials ({exc})", CREDENTIAL_SETTINGS)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in AUTH_CODES or code == "403":
            return ServiceCheck(
                "s3", target, False, f"credentials rejected ({code})", CREDENTIAL_SETTINGS
            )
        if code in ("NoSuchBucket", "404"):
            return ServiceCheck("s3", target, False, "no such bucket", bucket_setting)
        return ServiceCheck("s3", target, False, f"S3 error {code}", endpoint_setting)
    except BotoCoreError as exc:
        return ServiceCheck("s3", target, False, f"{type(exc).__name__}: {exc}", endpoint_setting)
    return ServiceCheck("s3", target, True, "bucket reachable with these credentials")


def dvc_remote(config: dict[str, str]) -> tuple[str, str, str | None] | None:
    """(remote name, url, endpointurl) of the default DVC remote from ``dvc config --list``."""
    name = config.get("core.remote")
    if not name or f"remote.{name}.url" not in config:
        return None
    return name, config[f"remote.{name}.url"], config.get(f"remote.{name}.endpointurl")


def parse_dvc_config(listing: str) -> dict[str, str]:
    """``dvc config --list`` output (``key=value`` lines) as a mapping."""
    pairs = (line.partition("=") for line in listing.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, _, value in pairs}


def configured_checks(
    data: DataParams, mlflow_uri: str, prefect_url: str | None, dvc_listing: str
) -> list[ServiceCheck]:
    """MLflow, Prefect, the default DVC remote (from ``dvc config --list``), s3:// sources."""
    from arcflow.data.sources.s3 import parse_uri

    checks = [check_mlflow(mlflow_uri), check_prefect(prefect_url)]
    remote = dvc_remote(parse_dvc_config(dvc_listing))
    if remote is not None and remote[1].startswith("s3://"):
        name, url, endpoint = remote
        checks.append(
            check_s3(
                parse_uri(url)[0],
                options=S3Options(endpoint_url=endpoint),
                endpoint_setting=f"remote.{name}.endpointurl (.dvc/config.local) "
                "or AWS_ENDPOINT_URL",
                bucket_setting=f"remote.{name}.url (.dvc/config)",
                role=f"DVC remote '{name}'",
            )
        )
    for name, source in data.sources.items():
        if source.uri.startswith("s3://"):
            checks.append(
                check_s3(
                    parse_uri(source.uri)[0],
                    options=S3Options(**data.s3.model_dump()),
                    endpoint_setting="data.s3.endpoint_url (params.yaml) or AWS_ENDPOINT_URL",
                    bucket_setting=f"data.sources.{name}.uri (params.yaml)",
                    role=f"source {name}",
                )
            )
    return checks
