"""What a fetch can vouch for: which checksum matched, or why the bytes are unverified.

The download stage writes :meth:`Fetched.report` as ``reports/download/<name>.json``, so a
source that nothing checked is visible in the pipeline's outputs, not only in a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["file", "archive", "directory", "synthetic"]


@dataclass(frozen=True)
class Fetched:
    """The result of one fetch and what vouches for its bytes."""

    path: Path  # the file, or the directory it became
    kind: Kind
    checksum: str | None = None  # "sha256" or "md5" when the source's checksum matched
    sha256: str | None = None  # the fetched file's digest (files and archives)
    size: int | None = None  # bytes fetched (files and archives)
    length_announced: bool = True  # False: an HTTP body without a length (close-delimited)

    @property
    def verified(self) -> bool:
        """A checksum from params matched (or the data was generated from params)."""
        return self.checksum is not None or self.kind == "synthetic"

    def status(self) -> str:
        """One line: what vouches for the data, or ``UNVERIFIED: why``."""
        if self.kind == "synthetic":
            return "verified: generated deterministically from params"
        if self.checksum is not None:
            return f"verified: {self.checksum} matched the source's checksum"
        if self.kind == "directory":
            return (
                "UNVERIFIED: directory sources carry no checksum; only sizes (and S3 ETags) "
                "were checked"
            )
        if not self.length_announced:
            return (
                "UNVERIFIED: no checksum, and the server gave no length, so only a clean end "
                "of the transfer says the file is whole"
            )
        return "UNVERIFIED: no checksum; the size matched what the server announced"

    def report(self, name: str, uri: str) -> dict[str, object]:
        """The stage report: plain JSON, with the sha256 to pin when unverified."""
        out: dict[str, object] = {
            "source": name,
            "uri": uri,
            "path": str(self.path),
            "kind": self.kind,
            "verified": self.verified,
            "status": self.status(),
            "checksum": self.checksum,
            "sha256": self.sha256,
            "bytes": self.size,
            "length_announced": self.length_announced,
        }
        if not self.verified and self.sha256:
            out["hint"] = f"pin these bytes: data.sources.{name}.sha256: {self.sha256}"
        return out
