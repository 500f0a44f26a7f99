"""HTTP sources against a real ThreadingHTTPServer on 127.0.0.1: resume, retries, failures."""

from __future__ import annotations

import errno
import hashlib
import io
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from arcflow.data.sources import RetryPolicy, Source, fetch, fetch_checked, staging_dir, stream
from arcflow.errors import SourceError

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MiB: several 1 MiB chunks
FAST = RetryPolicy(attempts=5, backoff_s=0.01, timeout_s=5.0)


@dataclass
class Route:
    """How the server answers one path."""

    body: bytes = BODY
    status: int | None = None  # always answer this error status
    fail_first: int = 0  # answer 500 to the first N requests
    drop_after: int | None = None  # send only this many body bytes, then close…
    drop_times: int = 1  # …on the first N requests
    delay_first: float = 0.0  # sleep before answering the first request
    ranges: bool = True  # honour Range (False: answer 200 with the whole body)
    wrong_range_start: bool = False  # answer a Range request with bytes from 0
    etag: str | None = '"v1"'  # the validator sent (None: neither ETag nor Last-Modified)
    changed_body: bytes | None = None  # from the second request on, serve this (ETag "v2")
    framing: str = "length"  # "length": Content-Length; "close": no length; "chunked"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def seen(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [headers for p, headers in self.requests if p == path]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out and hang up are part of the tests


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.requests.append((path, dict(self.headers)))
            count = sum(p == path for p, _ in self.server.requests)
        route = self.server.routes.get(path)
        if route is None:
            self.send_error(404)
            return
        if count == 1 and route.delay_first:
            time.sleep(route.delay_first)
        if route.status is not None:
            self.send_error(route.status)
            return
        if count <= route.fail_first:
            self.send_error(500)
            return
        body, start, etag = route.body, 0, route.etag
        if route.changed_body is not None and count > 1:
            body, etag = route.changed_body, '"v2"'
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if match and route.ranges and (if_range is None or if_range == etag):
            start = 0 if route.wrong_range_start else int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if route.framing == "length":
            self.send_header("Content-Length", str(len(body) - start))
        elif route.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        if etag is not None:
            self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        payload = body[start:]
        if route.framing == "chunked":
            size = 64 * 1024
            payload = (
                b"".join(
                    b"%x\r\n%s\r\n" % (len(payload[i : i + size]), payload[i : i + size])
                    for i in range(0, len(payload), size)
                )
                + b"0\r\n\r\n"
            )
        if route.drop_after is not None and count <= route.drop_times:
            payload = payload[: route.drop_after]  # then return: HTTP/1.0 closes the socket
        self.wfile.write(payload)

    def send_response_only(self, code: int, message: str | None = None) -> None:
        # chunked framing needs an HTTP/1.1 status line; the socket still closes after
        route = self.server.routes.get(self.path.split("?")[0])
        self.protocol_version = "HTTP/1.1" if route and route.framing == "chunked" else "HTTP/1.0"
        super().send_response_only(code, message)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _no_partial(dest: Path, name: str) -> None:
    assert not (dest / name).exists()
    assert not staging_dir(dest, Source(name, "x")).exists()
    assert not [p for p in dest.rglob("*") if ".part" in p.name]


def test_download_with_sha256_keeps_the_basename(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCFLOW_PROGRESS", "1")  # the bar shows; not asserted on
    server.routes["/files/data.bin"] = Route()
    source = Source("raw", server.url("/files/data.bin"), sha256=hashlib.sha256(BODY).hexdigest())
    out = fetch(source, tmp_path, retry=FAST)
    assert out == tmp_path / "raw" / "data.bin"
    assert out.read_bytes() == BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_dropped_connection_resumes_with_range(server: Server, tmp_path: Path) -> None:
    cut = 1_234_567
    server.routes["/data.bin"] = Route(drop_after=cut)
    source = Source("raw", server.url("/data.bin"), md5=hashlib.md5(BODY).hexdigest())
    out = fetch(source, tmp_path, retry=FAST)
    assert out.read_bytes() == BODY
    first, second = server.seen("/data.bin")
    assert "Range" not in first
    assert second["Range"] == f"bytes={cut}-"


@pytest.mark.attack
def test_without_a_validator_a_dropped_download_starts_over(server: Server, tmp_path: Path) -> None:
    """Nothing ties the bytes held to the file served now: no Range, a fresh download."""
    server.routes["/data.bin"] = Route(drop_after=1000, etag=None)
    out = fetch(Source("raw", server.url("/data.bin")), tmp_path, retry=FAST)
    assert out.read_bytes() == BODY
    assert [r.get("Range") for r in server.seen("/data.bin")] == [None, None]


@pytest.mark.attack
def test_a_file_changed_between_attempts_is_not_spliced(server: Server, tmp_path: Path) -> None:
    """The resume carries If-Range: the server, whose file changed, answers 200 with the whole
    new file, and that is what lands (not 1000 old bytes + the new file's tail)."""
    new = bytes(reversed(BODY))
    server.routes["/data.bin"] = Route(drop_after=1000, changed_body=new)
    out = fetch(Source("raw", server.url("/data.bin")), tmp_path, retry=FAST)
    assert out.read_bytes() == new
    second = server.seen("/data.bin")[1]
    assert second["Range"] == "bytes=1000-" and second["If-Range"] == '"v1"'


@pytest.mark.attack
def test_a_body_without_a_length_is_fetched_but_reported_unverified(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A close-delimited body cut short looks like a whole one: without a checksum the fetch
    says so (UNVERIFIED, with the sha256 to pin) instead of vouching for it."""
    server.routes["/data.bin"] = Route(framing="close")
    uri = server.url("/data.bin")
    fetched = fetch_checked(Source("raw", uri), tmp_path, retry=FAST)
    assert fetched.path.read_bytes() == BODY
    assert not fetched.verified and not fetched.length_announced
    assert fetched.status().startswith("UNVERIFIED: no checksum, and the server gave no length")
    digest = hashlib.sha256(BODY).hexdigest()
    report = fetched.report("raw", uri)
    assert report["sha256"] == digest and report["bytes"] == len(BODY)
    assert report["hint"] == f"pin these bytes: data.sources.raw.sha256: {digest}"
    assert "UNVERIFIED" in caplog.text
    # the same body with its checksum is verified, and the log stays quiet
    caplog.clear()
    pinned = fetch_checked(Source("pinned", uri, sha256=digest), tmp_path, retry=FAST)
    assert pinned.verified and pinned.checksum == "sha256" and "hint" not in pinned.report("p", uri)
    assert "UNVERIFIED" not in caplog.text


@pytest.mark.attack
def test_a_chunked_body_cut_short_is_never_accepted(server: Server, tmp_path: Path) -> None:
    """Chunked framing shows a cut (no final zero-size chunk): the download is retried and
    what lands is the whole file, never the bytes received before the cut."""
    server.routes["/data.bin"] = Route(framing="chunked", drop_after=200_000, etag=None)
    out = fetch(Source("raw", server.url("/data.bin")), tmp_path, retry=FAST)
    assert out.read_bytes() == BODY
    assert len(server.seen("/data.bin")) == 2
    server.routes["/cut.bin"] = Route(framing="chunked", drop_after=200_000, drop_times=9)
    with pytest.raises(SourceError, match="connection dropped"):
        fetch(Source("cut", server.url("/cut.bin")), tmp_path, retry=FAST)
    assert not (tmp_path / "cut").exists()


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = Route(drop_after=1000, ranges=False)
    out = fetch(Source("raw", server.url("/data.bin")), tmp_path, retry=FAST)
    assert out.read_bytes() == BODY
    assert server.seen("/data.bin")[1]["Range"] == "bytes=1000-"


def test_content_range_from_the_wrong_byte_starts_over(server: Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = Route(drop_after=1000, wrong_range_start=True)
    out = fetch(Source("raw", server.url("/data.bin")), tmp_path, retry=FAST)
    assert out.read_bytes() == BODY
    requests = server.seen("/data.bin")
    assert [r.get("Range") for r in requests] == [None, "bytes=1000-", None]


def test_500_twice_then_success(server: Server, tmp_path: Path) -> None:
    server.routes["/flaky.bin"] = Route(fail_first=2)
    out = fetch(Source("raw", server.url("/flaky.bin")), tmp_path, retry=FAST)
    assert out.read_bytes() == BODY
    assert len(server.seen("/flaky.bin")) == 3


def test_timeout_is_retried(server: Server, tmp_path: Path) -> None:
    server.routes["/slow.bin"] = Route(delay_first=1.5)
    policy = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=0.5)
    out = fetch(Source("raw", server.url("/slow.bin")), tmp_path, retry=policy)
    assert out.read_bytes() == BODY
    assert len(server.seen("/slow.bin")) == 2


@pytest.mark.parametrize(("status", "phrase"), [(404, "Not Found"), (403, "Forbidden")])
def test_client_errors_fail_fast(server: Server, tmp_path: Path, status: int, phrase: str) -> None:
    server.routes["/gone.bin"] = Route(status=status)
    url = server.url("/gone.bin")
    with pytest.raises(SourceError, match=re.escape(f"{status} {phrase}: {url}")):
        fetch(Source("raw", url), tmp_path, retry=FAST)
    assert len(server.seen("/gone.bin")) == 1  # no retries
    _no_partial(tmp_path, "raw")


def test_gives_up_after_attempts_then_resumes_next_time(server: Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = Route(drop_after=1000, drop_times=2)
    source = Source("raw", server.url("/data.bin"))
    policy = RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=5.0)
    with pytest.raises(SourceError, match=r"failed after 2 attempts.*dropped after 2000 of"):
        fetch(source, tmp_path, retry=policy)
    assert not (tmp_path / "raw").exists()
    part = staging_dir(tmp_path, source) / "data.bin.part"
    assert part.stat().st_size == 2000  # kept for the next fetch
    out = fetch(source, tmp_path, retry=policy)
    assert out.read_bytes() == BODY
    assert server.seen("/data.bin")[2]["Range"] == "bytes=2000-"
    assert not staging_dir(tmp_path, source).exists()


def test_wrong_content_names_both_digests_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/data.bin"] = Route(body=b"not the dataset" * 1000)
    expected = hashlib.sha256(BODY).hexdigest()
    actual = hashlib.sha256(b"not the dataset" * 1000).hexdigest()
    with pytest.raises(SourceError) as info:
        fetch(Source("raw", server.url("/data.bin"), sha256=expected), tmp_path, retry=FAST)
    assert expected in str(info.value) and actual in str(info.value)
    assert "data.bin" in str(info.value)
    _no_partial(tmp_path, "raw")


def test_zip_is_extracted(server: Server, tmp_path: Path) -> None:
    server.routes["/release.zip"] = Route(body=_zip({"faces/a.txt": "a", "pairs.txt": "p"}))
    out = fetch(Source("raw", server.url("/release.zip")), tmp_path, retry=FAST)
    assert out == tmp_path / "raw"
    assert (out / "faces" / "a.txt").read_text() == "a"
    assert (out / "pairs.txt").read_text() == "p"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_malicious_zip_writes_nothing_outside(server: Server, tmp_path: Path) -> None:
    server.routes["/evil.zip"] = Route(body=_zip({"ok.txt": "ok", "../evil.txt": "pwned"}))
    dest = tmp_path / "dest"
    with pytest.raises(SourceError, match=r"evil\.zip.*'\.\./evil\.txt'"):
        fetch(Source("raw", server.url("/evil.zip")), dest, retry=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert list(dest.iterdir()) == []


def test_disk_full_is_a_source_error(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/data.bin"] = Route()

    def full(fh: object, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stream, "_write", full)
    with pytest.raises(SourceError, match=r"disk full while writing .*data\.bin\.part"):
        fetch(Source("raw", server.url("/data.bin")), tmp_path, retry=FAST)
    assert len(server.seen("/data.bin")) == 1  # not retried
    _no_partial(tmp_path, "raw")
