"""S3 sources against a real moto server on 127.0.0.1: objects, prefixes, 404/403, resume."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ResponseStreamingError
from moto.server import ThreadedMotoServer

from arcflow.data.sources import (
    RetryPolicy,
    S3Options,
    Source,
    fetch,
    fetch_checked,
    s3,
    staging_dir,
)
from arcflow.errors import ConfigError, SourceError

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * (10 * 1024 + 3)  # ~2.5 MiB
FAST = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=10.0)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials from the environment only; no ~/.aws, no instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(moto_url: str, aws_env: None) -> Any:
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def bucket(client: Any) -> str:
    name = f"arcflow-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def opts(moto_url: str) -> S3Options:
    return S3Options(endpoint_url=moto_url, region="us-east-1")


@pytest.fixture
def get_ranges(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The Range header of every GetObject the fetcher sends (spied on its own client)."""
    seen: list[str | None] = []
    make_client = s3.make_client

    def record(request: Any, **_: Any) -> None:
        value = request.headers.get("Range")
        seen.append(value.decode() if isinstance(value, bytes) else value)

    def spying(options: S3Options, policy: RetryPolicy) -> Any:
        spied = make_client(options, policy)
        spied.meta.events.register("before-send.s3.GetObject", record)
        return spied

    monkeypatch.setattr(s3, "make_client", spying)
    return seen


def _no_partial(dest: Path, name: str) -> None:
    assert not (dest / name).exists()
    assert not staging_dir(dest, Source(name, "x")).exists()


def test_object_with_sha256(client: Any, bucket: str, opts: S3Options, tmp_path: Path) -> None:
    client.put_object(Bucket=bucket, Key="releases/v1/data.bin", Body=BODY)
    source = Source(
        "raw", f"s3://{bucket}/releases/v1/data.bin", sha256=hashlib.sha256(BODY).hexdigest()
    )
    out = fetch(source, tmp_path, s3=opts, retry=FAST)
    assert out == tmp_path / "raw" / "data.bin"
    assert out.read_bytes() == BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_sha256_mismatch_leaves_nothing(
    client: Any, bucket: str, opts: S3Options, tmp_path: Path
) -> None:
    client.put_object(Bucket=bucket, Key="data.bin", Body=BODY)
    wrong = "0" * 64
    with pytest.raises(SourceError) as info:
        fetch(Source("raw", f"s3://{bucket}/data.bin", sha256=wrong), tmp_path, s3=opts)
    assert wrong in str(info.value) and hashlib.sha256(BODY).hexdigest() in str(info.value)
    _no_partial(tmp_path, "raw")


def test_revision_of_a_prefix_and_an_object_follows_their_contents(
    client: Any, bucket: str, opts: S3Options
) -> None:
    from arcflow.data.sources.revision import source_revision

    client.put_object(Bucket=bucket, Key="rev/a.txt", Body=b"a")
    prefix, obj = f"s3://{bucket}/rev/", f"s3://{bucket}/rev/a.txt"
    first, first_obj = source_revision(prefix, s3=opts), source_revision(obj, s3=opts)
    assert source_revision(prefix, s3=opts) == first
    client.put_object(Bucket=bucket, Key="rev/b.txt", Body=b"b")  # new file under the prefix
    second = source_revision(prefix, s3=opts)
    assert second != first and source_revision(obj, s3=opts) == first_obj
    client.put_object(Bucket=bucket, Key="rev/a.txt", Body=b"changed")  # new ETag
    assert source_revision(prefix, s3=opts) != second
    assert source_revision(obj, s3=opts) != first_obj
    with pytest.raises(SourceError, match="no objects under this prefix"):
        source_revision(f"s3://{bucket}/empty/", s3=opts)


def test_prefix_mirrors_the_tree(client: Any, bucket: str, opts: S3Options, tmp_path: Path) -> None:
    files = {"a.txt": b"a", "sub/b.txt": b"bb", "sub/deeper/c.bin": BODY}
    for rel, data in files.items():
        client.put_object(Bucket=bucket, Key=f"sets/v1/{rel}", Body=data)
    client.put_object(Bucket=bucket, Key="sets/v1/", Body=b"")  # a "folder" marker
    client.put_object(Bucket=bucket, Key="sets/v10/other.txt", Body=b"not under sets/v1/")
    fetched = fetch_checked(Source("raw", f"s3://{bucket}/sets/v1/"), tmp_path, s3=opts, retry=FAST)
    out = fetched.path
    assert out == tmp_path / "raw"
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files
    assert not fetched.verified and fetched.status().startswith("UNVERIFIED: directory sources")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.attack
def test_prefix_resume_refetches_an_object_replaced_with_the_same_size(
    client: Any, bucket: str, opts: S3Options, tmp_path: Path
) -> None:
    """A finished object in the staging tree is kept only if its ETag is still the listing's:
    an object replaced since (same size, other bytes) is fetched again, not kept stale."""
    for rel, data in {"a.txt": b"old!", "b.txt": b"keep"}.items():
        client.put_object(Bucket=bucket, Key=f"sets/r/{rel}", Body=data)
    source = Source("raw", f"s3://{bucket}/sets/r/")
    staged = staging_dir(tmp_path, source)
    tree = staged / "tree"
    tree.mkdir(parents=True)
    (staged / "source.uri").write_text(source.uri)
    for rel in ("a.txt", "b.txt"):  # what an interrupted run left: both finished, ETags noted
        head = client.head_object(Bucket=bucket, Key=f"sets/r/{rel}")
        (tree / rel).write_bytes(b"old!" if rel == "a.txt" else b"keep")
        (staged / "etags").mkdir(exist_ok=True)
        (staged / "etags" / f"{rel}.etag").write_text(head["ETag"])
    client.put_object(Bucket=bucket, Key="sets/r/a.txt", Body=b"new!")  # same size
    out = fetch(source, tmp_path, s3=opts, retry=FAST)
    assert (out / "a.txt").read_bytes() == b"new!" and (out / "b.txt").read_bytes() == b"keep"


def test_prefix_refuses_a_checksum(opts: S3Options, aws_env: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checksums apply to single files"):
        fetch(Source("raw", "s3://any-bucket/sets/", md5="0" * 32), tmp_path, s3=opts)


@pytest.mark.parametrize("key", ["../../evil.txt", "a//b.txt", "./x.txt"])
def test_prefix_refuses_keys_that_escape(
    client: Any, bucket: str, opts: S3Options, tmp_path: Path, key: str
) -> None:
    client.put_object(Bucket=bucket, Key="sets/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key=f"sets/{key}", Body=b"pwned")
    dest = tmp_path / "dest"
    with pytest.raises(SourceError, match=re.escape(f"refusing key 'sets/{key}'")):
        fetch(Source("raw", f"s3://{bucket}/sets/"), dest, s3=opts, retry=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert list(dest.iterdir()) == []


def test_missing_key_is_404(client: Any, bucket: str, opts: S3Options, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        fetch(Source("raw", f"s3://{bucket}/nope/data.bin"), tmp_path, s3=opts, retry=FAST)
    message = str(info.value)
    assert "404" in message and "object not found" in message
    assert repr(bucket) in message and "'nope/data.bin'" in message
    _no_partial(tmp_path, "raw")


def test_missing_bucket_is_404(opts: S3Options, aws_env: None, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        fetch(Source("raw", "s3://arcflow-no-such-bucket/data.bin"), tmp_path, s3=opts)
    message = str(info.value)
    assert "404" in message and "bucket not found" in message
    assert "'arcflow-no-such-bucket'" in message and "'data.bin'" in message


def test_missing_bucket_prefix_is_404(opts: S3Options, aws_env: None, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"404 NoSuchBucket.*'arcflow-no-such-bucket'"):
        fetch(Source("raw", "s3://arcflow-no-such-bucket/sets/"), tmp_path, s3=opts)


def test_access_denied_is_403_with_a_credentials_hint(
    client: Any, bucket: str, opts: S3Options, tmp_path: Path
) -> None:
    # a real 403 from the server: the bucket policy denies GetObject under secret/
    client.put_object(Bucket=bucket, Key="secret/data.bin", Body=BODY)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/secret/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    with pytest.raises(SourceError) as info:
        fetch(Source("raw", f"s3://{bucket}/secret/data.bin"), tmp_path, s3=opts, retry=FAST)
    error = info.value
    assert "403" in str(error) and repr(bucket) in str(error) and "'secret/data.bin'" in str(error)
    assert "AWS_PROFILE" in error.hint and "AWS_ACCESS_KEY_ID" in error.hint
    assert "params.yaml" in error.hint
    _no_partial(tmp_path, "raw")


def test_no_credentials_is_a_source_error(
    bucket: str, opts: S3Options, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SourceError, match="no usable AWS credentials") as info:
        fetch(Source("raw", f"s3://{bucket}/data.bin"), tmp_path, s3=opts, retry=FAST)
    assert "AWS_PROFILE" in info.value.hint


def test_resumes_from_an_existing_part(
    client: Any,
    bucket: str,
    opts: S3Options,
    tmp_path: Path,
    get_ranges: list[str | None],
) -> None:
    client.put_object(Bucket=bucket, Key="data.bin", Body=BODY)
    source = Source("raw", f"s3://{bucket}/data.bin", sha256=hashlib.sha256(BODY).hexdigest())
    half = len(BODY) // 2
    part = staging_dir(tmp_path, source) / "data.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[:half])
    out = fetch(source, tmp_path, s3=opts, retry=FAST)
    assert out.read_bytes() == BODY
    assert get_ranges == [f"bytes={half}-"]  # only the rest was asked for
    assert not staging_dir(tmp_path, source).exists()


def test_broken_stream_is_resumed(
    client: Any,
    bucket: str,
    opts: S3Options,
    tmp_path: Path,
    get_ranges: list[str | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client.put_object(Bucket=bucket, Key="data.bin", Body=BODY)
    cut = 1_500_000
    make_client = s3.make_client  # already the spy

    class Breaking:
        """A body that breaks after ``cut`` bytes, like a connection reset mid-stream."""

        def __init__(self, body: Any) -> None:
            self.body, self.left = body, cut

        def read(self, amt: int) -> bytes:
            if self.left <= 0:
                raise ResponseStreamingError(error="connection reset by peer")
            data = self.body.read(min(amt, self.left))
            self.left -= len(data)
            return data

        def close(self) -> None:
            self.body.close()

    def break_first(parsed: dict[str, Any], **_: Any) -> None:
        if not get_ranges[1:]:  # only the first GET
            parsed["Body"] = Breaking(parsed["Body"])

    def breaking_client(options: S3Options, policy: RetryPolicy) -> Any:
        spied = make_client(options, policy)
        spied.meta.events.register("after-call.s3.GetObject", break_first)
        return spied

    monkeypatch.setattr(s3, "make_client", breaking_client)
    out = fetch(Source("raw", f"s3://{bucket}/data.bin"), tmp_path, s3=opts, retry=FAST)
    assert out.read_bytes() == BODY
    assert get_ranges == [None, f"bytes={cut}-"]
