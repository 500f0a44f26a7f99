"""S3 sources: one object (``s3://bucket/key``) or every object under a prefix (``…/prefix/``).

Credentials come only from the environment / AWS config chain (``boto3.Session`` with an
optional profile). Downloads stream into a ``.part`` file and resume with a ranged GET.
botocore retries failed requests (standard mode); a stream that breaks mid-body is resumed
here, with backoff.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from tqdm.auto import tqdm

from arcflow.data.sources.retry import Transient, with_retries
from arcflow.data.sources.spec import RetryPolicy, S3Options, file_name
from arcflow.data.sources.stream import (
    byte_bar,
    pump,
    read_validator,
    write_errors,
    write_validator,
)
from arcflow.errors import SourceError
from arcflow.progress import progress

CREDENTIALS_HINT = (
    "S3 credentials come from the environment or the AWS config chain: set AWS_PROFILE, or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure ~/.aws (never params.yaml); "
    "also check the bucket policy"
)
_TRANSIENT = (ConnectionError, HTTPClientError, IncompleteReadError)
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``("bucket", "key")``; a key of ``""`` or ending in ``/`` is a
    prefix. Keys may hold any character (``?`` and ``#`` included)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key


def is_prefix(key: str) -> bool:
    """Whether ``key`` names every object under it (empty, or ending in ``/``)."""
    return key == "" or key.endswith("/")


def make_client(options: S3Options, policy: RetryPolicy) -> Any:
    """An S3 client for ``options``; credentials from the environment / AWS config chain."""
    try:
        session = boto3.Session(profile_name=options.profile)
    except ProfileNotFound as exc:
        message = f"AWS profile not found: {options.profile}"
        raise SourceError(message, hint=CREDENTIALS_HINT) from exc
    config = Config(
        retries={"max_attempts": policy.attempts, "mode": "standard"},
        connect_timeout=policy.timeout_s,
        read_timeout=policy.timeout_s,
    )
    return session.client(
        "s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config
    )


def download_object(
    client: Any,
    bucket: str,
    key: str,
    part: Path,
    policy: RetryPolicy,
    *,
    size: int | None = None,
    etag: str | None = None,
    label: str | None = None,
) -> None:
    """Stream ``s3://bucket/key`` into ``part``, resuming from the bytes it already holds.

    ``size``/``etag`` come from a listing; without them the object is HEAD-ed first.
    """
    if size is None:
        with errors(client, bucket, key):
            head = client.head_object(Bucket=bucket, Key=key)
        size, etag = int(head["ContentLength"]), head.get("ETag")
    recorded = read_validator(part)
    if recorded is not None and recorded != etag:  # the object changed since that .part
        part.unlink(missing_ok=True)
    part.parent.mkdir(parents=True, exist_ok=True)
    write_validator(part, etag)
    with byte_bar(label or key, total=size) as bar:
        with_retries(
            lambda: _attempt(client, bucket, key, part, size, etag, bar),
            policy,
            f"GET s3://{bucket}/{key}",
        )


def _attempt(
    client: Any, bucket: str, key: str, part: Path, size: int, etag: str | None, bar: tqdm
) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    bar.reset(total=size)
    bar.update(have)
    if part.exists() and have == size:
        return
    request: dict[str, str] = {"Bucket": bucket, "Key": key}
    if have:
        request["Range"] = f"bytes={have}-"
    if etag:
        request["IfMatch"] = etag
    with errors(client, bucket, key):
        response = client.get_object(**request)
    body = response["Body"]
    try:
        start = _range_start(response.get("ContentRange")) if have else 0
        if start != have:
            part.unlink(missing_ok=True)
            raise Transient(f"ranged GET from byte {have} answered from byte {start}")
        with write_errors(part):
            fh = open(part, "ab" if have else "wb")  # noqa: SIM115 - closed just below
        with fh, errors(client, bucket, key):
            pump(body.read, fh, part, bar)
    except OSError as exc:
        raise Transient(f"stream broke after {part.stat().st_size} bytes: {exc}") from exc
    finally:
        body.close()
    got = part.stat().st_size
    if got != size:
        raise Transient(f"stream ended after {got} of {size} bytes")


def download_prefix(
    client: Any, bucket: str, prefix: str, staging: Path, policy: RetryPolicy
) -> Path:
    """Mirror every object under ``prefix`` into ``staging/tree`` and return that directory.

    Partial objects wait in ``staging/parts``; objects already complete in the tree are kept
    when both their size and their ETag (recorded in ``staging/etags``) are the listing's, so a
    rerun resumes without keeping bytes of an object replaced since. Keys that would escape
    the tree are refused.
    """
    objects = _list(client, bucket, prefix, policy)
    tree, parts, etags = staging / "tree", staging / "parts", staging / "etags"
    tree.mkdir(parents=True, exist_ok=True)
    for rel, key, size, etag in progress(objects, desc=f"s3://{bucket}/{prefix}", unit="file"):
        final = tree.joinpath(*rel)
        recorded = etags.joinpath(*rel[:-1], rel[-1] + ".etag")
        if (
            final.is_file()
            and final.stat().st_size == size
            and etag is not None
            and recorded.is_file()
            and recorded.read_text() == etag
        ):
            continue
        part = parts.joinpath(*rel[:-1], rel[-1] + ".part")
        download_object(client, bucket, key, part, policy, size=size, etag=etag, label=key)
        with write_errors(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, final)
            if etag is not None:
                recorded.parent.mkdir(parents=True, exist_ok=True)
                recorded.write_text(etag)
    return tree


def _list(
    client: Any, bucket: str, prefix: str, policy: RetryPolicy
) -> list[tuple[list[str], str, int, str | None]]:
    """``(relative parts, key, size, etag)`` of every object under ``prefix``, checked."""
    found: list[tuple[list[str], str, int, str | None]] = []

    def attempt() -> None:
        found.clear()
        with errors(client, bucket, prefix):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):  # a "directory" marker
                        continue
                    rel = _relative(bucket, prefix, key)
                    found.append((rel, key, int(obj["Size"]), obj.get("ETag")))

    with_retries(attempt, policy, f"LIST s3://{bucket}/{prefix}")
    if not found:
        raise SourceError(f"no objects under s3://{bucket}/{prefix}")
    dirs = {tuple(rel[:i]) for rel, *_ in found for i in range(1, len(rel))}
    for rel, key, *_ in found:
        if tuple(rel) in dirs:
            raise SourceError(f"s3://{bucket}/{key} is both an object and a prefix of others")
    return found


def _relative(bucket: str, prefix: str, key: str) -> list[str]:
    parts = key[len(prefix) :].split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in key:
        raise SourceError(
            f"refusing key {key!r} in bucket {bucket!r}: it is not a plain relative path "
            "under the prefix (empty, '.' or '..' components would escape or collide)"
        )
    for part in parts:
        file_name(part, f"s3://{bucket}/{key}")
    return parts


def _range_start(content_range: str | None) -> int:
    """Start byte of ``bytes <start>-<end>/<total>`` (-1 when absent or malformed)."""
    try:
        return int((content_range or "").split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


@contextlib.contextmanager
def errors(client: Any, bucket: str, key: str) -> Iterator[None]:
    """Map botocore failures: 404/403 and the like → SourceError, network trouble → Transient."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(exc, client, bucket, key) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise SourceError(
            f"no usable AWS credentials for bucket {bucket!r}, key {key!r}: {exc}",
            hint=CREDENTIALS_HINT,
        ) from exc
    except _TRANSIENT as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from exc


def _client_error(exc: ClientError, client: Any, bucket: str, key: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    where = f"bucket {bucket!r}, key {key!r} (s3://{bucket}/{key})"
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404"):
        if code in ("404", "NotFound") and not _bucket_exists(client, bucket):
            code = "NoSuchBucket"
        what = "bucket not found" if code == "NoSuchBucket" else "object not found"
        name = code if code not in ("404", "NotFound") else "NoSuchKey"
        return SourceError(f"S3 {what} (404 {name}): {where}")
    if status == 403 or code in AUTH_CODES:
        name = code if code != "403" else "Forbidden"
        return SourceError(f"S3 access denied (403 {name}): {where}", hint=CREDENTIALS_HINT)
    if code in ("PreconditionFailed", "412"):
        return SourceError(f"S3 object changed during the download: {where}; rerun")
    if status >= 500 or status == 429 or code in _RETRY_CODES:
        return Transient(f"S3 {status} {code}: {error.get('Message', '')}")
    return SourceError(f"S3 {status} {code}: {where}: {error.get('Message', '')}")


def _bucket_exists(client: Any, bucket: str) -> bool:
    """False only when S3 says the bucket is missing (a 404 from HEAD could be either)."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) != 404
    except Exception:  # only refines an error message
        return True
    return True
