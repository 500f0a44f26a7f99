"""HTTP(S) downloads: streamed in 1 MiB chunks into a ``.part`` file, resumed with ``Range``.

Dropped connections, timeouts, 408/429/5xx are retried with backoff; each retry asks for
``bytes=<have>-`` with ``If-Range: <validator>`` and appends a 206 answer (whose Content-Range
must start at ``<have>``), or starts over on a 200. Without a validator (the server sent no
ETag or Last-Modified) there is no resuming: a changed file would be spliced onto the old one's
bytes, so the download starts over. A body without a length is complete when the transfer ends
cleanly; :func:`download` says when completeness rested on that alone. Other 4xx (404, 403, …)
fail at once.
"""

from __future__ import annotations

import http.client
import posixpath
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tqdm.auto import tqdm

from arcflow.data.sources.retry import Transient, with_retries
from arcflow.data.sources.spec import RetryPolicy, file_name
from arcflow.data.sources.stream import (
    byte_bar,
    pump,
    read_validator,
    write_errors,
    write_validator,
)
from arcflow.errors import SourceError

USER_AGENT = "arcflow-sources/0.1"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUS = {408, 429}


def basename(url: str, default: str) -> str:
    """The file name at the end of ``url``'s path (``default`` when there is none); a name
    that cannot be a file name here (``%00``, control characters, too long) is a SourceError."""
    name = posixpath.basename(unquote(urlsplit(url).path))
    return default if name in ("", ".", "..") else file_name(name, url)


@dataclass
class _Seen:
    """The remote version the partial file holds: ETag/Last-Modified, sent as ``If-Range``."""

    validator: str | None = None
    sized: bool = True  # the last response said how many bytes the file has


def download(url: str, part: Path, policy: RetryPolicy, *, label: str | None = None) -> bool:
    """Stream ``url`` into ``part``, resuming from the bytes ``part`` already holds when the
    server identified that version; returns whether the size was known (else completeness
    rests on a clean end of the transfer only)."""
    part.parent.mkdir(parents=True, exist_ok=True)
    seen = _Seen(read_validator(part))
    with byte_bar(label or part.name) as bar:
        with_retries(lambda: _attempt(url, part, policy, seen, bar), policy, f"GET {url}")
    return seen.sized


def _attempt(url: str, part: Path, policy: RetryPolicy, seen: _Seen, bar: tqdm) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have and not seen.validator:  # nothing ties these bytes to the file served now
        part.unlink()
        have = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = seen.validator or ""
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=policy.timeout_s)
    except urllib.error.HTTPError as exc:
        with exc:
            _failed_status(exc.code, exc.reason, exc.headers, url, part, have)
        return  # 416 for a part that is already complete
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise SourceError(f"TLS certificate not trusted for {url}: {exc.reason}") from exc
        raise Transient(f"cannot connect: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise Transient(_describe(exc)) from exc
    with response:
        offset, total = _start(response.status, response.headers, part, have)
        seen.validator = _validator(response.headers)
        seen.sized = total is not None
        write_validator(part, seen.validator)
        bar.reset(total=total)
        bar.update(offset)
        try:
            with write_errors(part):
                fh = open(part, "ab" if offset else "wb")  # noqa: SIM115 - closed just below
            with fh:
                pump(response.read, fh, part, bar)
        except (OSError, http.client.HTTPException) as exc:
            got = part.stat().st_size
            raise Transient(f"connection dropped after {got} bytes: {_describe(exc)}") from exc
    got = part.stat().st_size
    if total is not None and got != total:
        raise Transient(f"connection dropped after {got} of {total} bytes")


def _failed_status(
    code: int, reason: str, headers: Message, url: str, part: Path, have: int
) -> None:
    """Return when a 416 means ``part`` is complete; raise for every other error status."""
    if code == 416 and have:
        match = re.fullmatch(r"bytes\s+\*/(\d+)", (headers.get("Content-Range") or "").strip())
        if match and int(match[1]) == have:
            return
        part.unlink(missing_ok=True)
        raise Transient("416 Range Not Satisfiable for the partial file; starting over")
    reason = reason or _phrase(code)
    if code in _RETRY_STATUS or code >= 500:
        raise Transient(f"HTTP {code} {reason}", retry_after=_retry_after(headers))
    hint = "the server refused access; check the URL" if code in (401, 403) else ""
    raise SourceError(f"GET failed: HTTP {code} {reason}: {url}", hint=hint)


def _start(status: int, headers: Message, part: Path, have: int) -> tuple[int, int | None]:
    """``(offset, total size)`` for a successful response; where writing starts."""
    if status == 206:
        match = _CONTENT_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
        if not match or int(match[1]) != have:
            part.unlink(missing_ok=True)
            raise Transient(
                f"206 with Content-Range {headers.get('Content-Range')!r} for a request from "
                f"byte {have}; starting over"
            )
        return have, None if match[3] == "*" else int(match[3])
    if status == 200:  # a fresh download, or a server that ignored Range: start from 0
        length = headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None
    raise SourceError(f"unexpected HTTP {status} {_phrase(status)} for a download")


def _validator(headers: Message) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _retry_after(headers: Message) -> float | None:
    value = (headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
