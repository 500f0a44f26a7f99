"""Chunked copying from a reader into a file, with disk-full reported as a SourceError."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from arcflow.errors import SourceError
from arcflow.progress import enabled

CHUNK = 1 << 20  # 1 MiB


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn ``OSError`` while writing ``path`` into :class:`SourceError` (ENOSPC: disk full)."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise SourceError(
                f"disk full while writing {path}", hint="free space on that disk and rerun"
            ) from exc
        raise SourceError(f"cannot write {path}: {exc}") from exc


def _write(fh: BinaryIO, chunk: bytes) -> None:
    fh.write(chunk)


def pump(read: Callable[[int], bytes], fh: BinaryIO, path: Path, bar: tqdm | None = None) -> int:
    """Copy ``read(CHUNK)`` into ``fh`` until it returns ``b""``; return the bytes copied.

    Errors raised by ``read`` propagate unchanged; write errors become :class:`SourceError`.
    """
    copied = 0
    while chunk := read(CHUNK):
        with write_errors(path):
            _write(fh, chunk)
        copied += len(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return copied


def byte_bar(label: str, total: int | None = None, initial: int = 0) -> tqdm:
    """A byte progress bar (rate, ETA) honouring :func:`arcflow.progress.enabled`."""
    return tqdm(
        total=total,
        initial=initial,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        dynamic_ncols=True,
        disable=not enabled(),
    )


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def read_validator(part: Path) -> str | None:
    """The ETag/Last-Modified recorded for the partial file ``part``, if any."""
    path = _validator_path(part)
    return path.read_text() if path.is_file() else None


def write_validator(part: Path, value: str | None) -> None:
    """Record (or forget, for ``None``) which remote version ``part`` holds bytes of."""
    path = _validator_path(part)
    if value is None:
        path.unlink(missing_ok=True)
    else:
        with write_errors(path):
            path.write_text(value)
