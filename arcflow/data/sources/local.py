"""Local sources: ``file:///abs/path`` or a plain path, to a file or a directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from arcflow.atomic import atomic_dir
from arcflow.data.sources.stream import pump, write_errors
from arcflow.errors import SourceError


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a local path (``file://`` or no scheme; a drive letter counts)."""
    scheme = urlsplit(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1


def local_path(uri: str) -> Path:
    """The path a ``file://`` URI or a plain path names; it must exist."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI must be on this machine, got host {parts.netloc!r}")
        path = Path(url2pathname(unquote(parts.path)))
    else:
        path = Path(uri).expanduser()
    if not path.exists():
        raise SourceError(f"local source not found: {path}", hint="check the path in the source")
    return path


def copy_file(src: str | Path, dest: str | Path) -> None:
    """Copy the file ``src`` to ``dest`` in chunks (disk full → :class:`SourceError`)."""
    dest = Path(dest)
    with open(src, "rb") as fin:
        with write_errors(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            fout = open(dest, "wb")  # noqa: SIM115 - closed just below
        with fout:
            pump(fin.read, fout, dest)
    with write_errors(dest):
        shutil.copymode(src, dest)


def copy_tree(src: Path, target: Path) -> None:
    """Copy the directory ``src`` so that ``target`` becomes a copy of it, atomically.

    Symlinks are followed (the copy holds their contents, never links out of the tree).
    """
    real_src, real_target = src.resolve(), target.resolve()
    if real_target == real_src or real_src in real_target.parents:
        raise SourceError(f"cannot copy {src} into {target}: the destination is inside it")
    with atomic_dir(target) as tmp, write_errors(target):
        shutil.copytree(src, tmp, copy_function=copy_file, dirs_exist_ok=True)
