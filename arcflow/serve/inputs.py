"""Request items -> encoded image bytes, or a per-item error; never an exception for one item.

An item is encoded bytes, a base64 string (what JSON carries) or a path. Paths are read only
in-process by default: a server must not open files a remote caller names, so the pyfunc
model honours them only under the folder ``ARCFLOW_IMAGE_ROOT`` points to.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_ROOT_ENV = "ARCFLOW_IMAGE_ROOT"


@dataclass(frozen=True)
class ItemError:
    """Why item ``image`` gave no face: ``reason`` (a short code) and a readable message."""

    image: int
    reason: str
    message: str


def read_path(path: str | Path, index: int, max_bytes: int, root: Path | None) -> bytes | ItemError:
    """The bytes of ``path``; with ``root``, only a file inside it (symlinks resolved)."""
    where = Path(path)
    try:
        if root is not None and not where.resolve().is_relative_to(root.resolve()):
            return ItemError(index, "forbidden", f"{path}: outside {IMAGE_ROOT_ENV}={root}")
        size = where.stat().st_size
        if size > max_bytes:
            return ItemError(index, "too_large", f"{path}: {size:,} bytes > {max_bytes:,}")
        with open(where, "rb") as f:
            return f.read(max_bytes + 1)
    except FileNotFoundError:
        return ItemError(index, "not_found", f"{path}: no such file")
    except OSError as exc:
        return ItemError(index, "unreadable", f"{path}: {exc.strerror or exc}")


def decode_base64(text: str, index: int, max_bytes: int) -> bytes | ItemError:
    """Strict base64 (standard alphabet, padding optional; whitespace ignored)."""
    compact = "".join(text.split())
    if len(compact) * 3 // 4 > max_bytes + 3:
        return ItemError(index, "too_large", f"image {index}: more than {max_bytes:,} bytes")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return ItemError(index, "bad_base64", f"image {index}: not valid base64")


def item_bytes(
    item: object, index: int, *, max_bytes: int, allow_paths: bool, root: Path | None = None
) -> bytes | ItemError:
    """Resolve one request item to encoded image bytes (or the error for it)."""
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
    elif isinstance(item, Path):
        if not allow_paths:
            return ItemError(index, "forbidden", f"image {index}: paths are not accepted here")
        data_or_error = read_path(item, index, max_bytes, root)
        if isinstance(data_or_error, ItemError):
            return data_or_error
        data = data_or_error
    elif isinstance(item, str):
        data_or_error = decode_base64(item, index, max_bytes)
        if isinstance(data_or_error, ItemError):
            return data_or_error
        data = data_or_error
    elif item is None:
        return ItemError(index, "empty", f"image {index}: no image given")
    else:
        return ItemError(index, "bad_type", f"image {index}: {type(item).__name__} is not an image")
    if len(data) > max_bytes:
        return ItemError(index, "too_large", f"image {index}: {len(data):,} bytes > {max_bytes:,}")
    return data


def path_root() -> tuple[bool, Path | None]:
    """(paths allowed?, the root they must be under) for the pyfunc model, from the env."""
    root = os.environ.get(IMAGE_ROOT_ENV)
    return (bool(root), Path(root) if root else None)
