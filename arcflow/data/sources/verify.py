"""Streaming checksums of downloaded files.

Checksums apply to single files; a directory source (local directory, S3 prefix) has none,
and giving one raises ``ValueError`` before anything is fetched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from arcflow.data.sources.stream import CHUNK
from arcflow.errors import SourceError


def digests(path: Path) -> tuple[str, str]:
    """``(sha256, md5)`` hex digests of ``path``, read in one streaming pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def verify(
    path: Path, *, sha256: str | None = None, md5: str | None = None, label: str | None = None
) -> str:
    """Return ``path``'s sha256; raise :class:`SourceError` with both digests when it does not
    match the expected ``sha256``/``md5``.

    The digest is computed even without an expected one: the download report offers it for
    pinning. ``label`` names the file in the message (default: ``path.name``). Deleting the
    bad file is the caller's job.
    """
    actual_sha256, actual_md5 = digests(path)
    for kind, expected, actual in (("sha256", sha256, actual_sha256), ("md5", md5, actual_md5)):
        if expected is not None and expected.lower() != actual:
            raise SourceError(
                f"{kind} mismatch for {label or path.name}: "
                f"expected {expected.lower()}, got {actual}",
                hint="the download is corrupt or the source changed; the file was removed",
            )
    return actual_sha256
