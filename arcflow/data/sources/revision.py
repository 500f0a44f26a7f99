"""The revision of a source: a short id that changes when its contents change, read without
downloading it. Scheduled retraining compares it with the one recorded in params.yaml.

- ``s3://bucket/prefix/``: every object's key, ETag and size; ``s3://bucket/key``: its ETag,
  size and version id.
- ``http(s)://``: the ETag, or Last-Modified and Content-Length, of a HEAD request.
- a local file or folder: every file's relative path, size and modification time.
- ``synthetic://synthface``: its options (the data is a function of them).
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from arcflow.data.sources import local
from arcflow.data.sources.retry import Transient
from arcflow.data.sources.spec import RetryPolicy, S3Options
from arcflow.errors import SourceError


def _digest(entries: Any) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def _s3_entries(uri: str, s3: S3Options, retry: RetryPolicy) -> list[Any]:
    from arcflow.data.sources import s3 as s3_source

    bucket, key = s3_source.parse_uri(uri)
    client = s3_source.make_client(s3, retry)
    with s3_source.errors(client, bucket, key):
        if not s3_source.is_prefix(key):
            head = client.head_object(Bucket=bucket, Key=key)
            return [key, head.get("ETag"), head["ContentLength"], head.get("VersionId")]
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        entries = [
            [obj["Key"], obj.get("ETag"), obj["Size"]]
            for page in pages
            for obj in page.get("Contents", [])
        ]
    if not entries:
        raise SourceError(f"{uri}: no objects under this prefix")
    return entries


def _http_entries(uri: str, retry: RetryPolicy) -> list[Any]:
    request = urllib.request.Request(uri, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=retry.timeout_s) as response:
            headers = response.headers
    except OSError as exc:
        raise SourceError(f"{uri}: HEAD failed ({exc})") from None
    etag = headers.get("ETag")
    return [etag] if etag else [headers.get("Last-Modified"), headers.get("Content-Length")]


def _local_entries(path: Path) -> list[Any]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    root = path.parent if path.is_file() else path
    return [
        [str(f.relative_to(root)), (st := f.stat()).st_size, st.st_mtime_ns]
        for f in files
        if not f.name.startswith(".")
    ]


def source_revision(
    uri: str,
    *,
    options: dict[str, Any] | None = None,
    s3: S3Options | None = None,
    retry: RetryPolicy | None = None,
) -> str:
    """A 16-hex-digit id of the current contents of ``uri``."""
    retry = retry or RetryPolicy()
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "synthetic":
        return _digest([uri, options or {}])
    if scheme == "s3":
        try:
            return _digest(_s3_entries(uri, s3 or S3Options(), retry))
        except Transient as exc:
            raise SourceError(f"{uri}: {exc}", hint="check the endpoint and the network") from None
    if scheme in ("http", "https"):
        return _digest(_http_entries(uri, retry))
    if local.is_local(uri):
        return _digest(_local_entries(local.local_path(uri)))
    raise SourceError(f"{uri}: no revision for this kind of source")
