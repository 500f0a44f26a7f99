"""Safe zip/tar extraction: into a temporary sibling, checked member by member, then renamed.

Refused (naming the archive and the member): absolute paths, ``..`` components, symlinks and
hard links whose target leaves the extraction root, device/fifo/socket members, and any write
whose real location (after following links already extracted) is outside the root. tarfile's
``data`` filter is applied as a second line of defence where this Python has it.

Unpacking has a budget (:class:`ExtractLimits`): bytes written, their ratio to the archive's
size, and members. A zip's central directory is checked before anything is written (and the
free disk space against what it declares); every write is counted as it happens, since sizes
in headers can lie. Over budget, nothing of the archive is kept.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from arcflow.atomic import atomic_dir
from arcflow.data.sources.spec import ExtractLimits, is_archive_name
from arcflow.data.sources.stream import pump, write_errors
from arcflow.errors import SourceError

_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class _Unsafe(Exception):
    """A member that must not be extracted; ``str()`` says why."""


class _OverBudget(Exception):
    """Unpacking would exceed a limit; ``str()`` says which."""


class _Budget:
    """Counts members and bytes written against :class:`ExtractLimits`."""

    def __init__(self, limits: ExtractLimits, archive_size: int) -> None:
        self.limits = limits
        by_ratio = int(limits.max_ratio * max(archive_size, 1))
        self.max_bytes, self.key = min((limits.max_bytes, "max_bytes"), (by_ratio, "max_ratio"))
        self.members = 0
        self.written = 0

    def check_members(self, count: int) -> None:
        if count > self.limits.max_members:
            raise _OverBudget(
                f"more than {self.limits.max_members:,} members (data.extract_limits.max_members)"
            )

    def check_bytes(self, total: int) -> None:
        if total > self.max_bytes:
            raise _OverBudget(
                f"it unpacks to more than {self.max_bytes:,} bytes (data.extract_limits.{self.key})"
            )

    def member(self) -> None:
        self.members += 1
        self.check_members(self.members)

    def add(self, size: int) -> None:
        self.written += size
        self.check_bytes(self.written)

    def counted(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """``read`` (a member's), counting what it returns against the byte budget."""

        def read_counted(n: int) -> bytes:
            chunk = read(n)
            self.add(len(chunk))
            return chunk

        return read_counted


def extract_archive(
    archive: Path,
    target: Path,
    *,
    label: str | None = None,
    limits: ExtractLimits = ExtractLimits(),  # noqa: B008 - frozen, so a shared default is safe
) -> None:
    """Unpack the zip or tar ``archive`` so that ``target`` becomes its tree, atomically,
    within ``limits``.

    ``label`` is the name used in messages and for format detection (default: file name).
    """
    label = label or archive.name
    kind = _kind(archive, label)
    if kind is None:
        raise SourceError(f"{label} is not a zip or tar archive")
    budget = _Budget(limits, archive.stat().st_size)
    with atomic_dir(target) as tmp:
        try:
            if kind == "zip":
                _extract_zip(archive, tmp, budget)
            else:
                _extract_tar(archive, tmp, budget)
            _check_links(tmp)
        except _Unsafe as exc:
            raise SourceError(
                f"unsafe archive {label}: {exc}", hint="nothing was extracted from it"
            ) from None
        except _OverBudget as exc:
            raise SourceError(
                f"archive {label}: {exc}; nothing was extracted",
                hint="raise data.extract_limits in params.yaml if you trust this archive",
            ) from None
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise SourceError(f"cannot read archive {label}: {exc}") from exc


def _kind(archive: Path, label: str) -> str | None:
    """``"zip"`` or ``"tar"`` by the name's suffix, else by the content; ``None`` if neither."""
    if label.lower().endswith(".zip"):
        return "zip"
    if is_archive_name(label):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    return "tar" if tarfile.is_tarfile(archive) else None


def _parts(name: str) -> list[str]:
    """The member's path components; refuse absolute paths and ``..``."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise _Unsafe(f"member {name!r} has an absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Unsafe(f"member {name!r} has a '..' component")
    return parts


def _lexically_inside(base: list[str], link: str) -> bool:
    """Whether ``link`` resolved from directory ``base`` (root-relative) stays in the root."""
    posix = link.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        return False
    stack = list(base)
    for part in posix.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
        else:
            stack.append(part)
    return True


def _inside(root: Path, path: str | Path) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def _destination(root: Path, name: str, parts: list[str]) -> Path:
    """Where ``parts`` lands; following the links extracted so far, it must stay in ``root``."""
    dest = root.joinpath(*parts)
    if not _inside(root, dest.parent):
        raise _Unsafe(f"member {name!r} would be written through a link outside the root")
    if dest.is_symlink():
        raise _Unsafe(f"member {name!r} would overwrite the symlink extracted before it")
    return dest


def _check_symlink(root: Path, name: str, parts: list[str], link: str) -> None:
    if not _lexically_inside(parts[:-1], link) or not _inside(
        root, root.joinpath(*parts[:-1], link)
    ):
        raise _Unsafe(f"member {name!r} is a symlink to {link!r}, outside the root")


def _check_links(root: Path) -> None:
    """Final sweep: every symlink in the extracted tree must resolve inside it."""
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in (*dirnames, *filenames):
            path = Path(dirpath, entry)
            if path.is_symlink() and not _inside(root, path):
                rel = path.relative_to(root).as_posix()
                raise _Unsafe(f"member {rel!r} is a symlink that resolves outside the root")


def _extract_tar(archive: Path, root: Path, budget: _Budget) -> None:
    with tarfile.open(archive) as tf:
        for member in tf:  # lazily: a header bomb stops at the member limit
            budget.member()
            budget.add(member.size if member.isfile() else 0)
            tf.members.clear()  # tarfile would keep every header in memory
            name = member.name
            parts = _parts(name)
            if not parts:
                continue
            if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                raise _Unsafe(f"member {name!r} is a device or fifo")
            if member.issym():
                _check_symlink(root, name, parts, member.linkname)
            elif member.islnk():
                if not _lexically_inside([], member.linkname) or not _inside(
                    root, root / member.linkname
                ):
                    raise _Unsafe(f"member {name!r} is a hard link to {member.linkname!r}")
            elif not (member.isfile() or member.isdir()):
                raise _Unsafe(f"member {name!r} has an unsupported type")
            _destination(root, name, parts)
            try:
                with write_errors(root.joinpath(*parts)):
                    tf.extract(member, root, **_TAR_FILTER)
            except getattr(tarfile, "FilterError", ()) as exc:
                raise _Unsafe(f"member {name!r} refused by tarfile's data filter: {exc}") from None


def _check_declared(infos: list[zipfile.ZipInfo], root: Path, budget: _Budget) -> None:
    """The central directory against the budget and the free disk space, before any write."""
    budget.check_members(len(infos))
    declared = sum(info.file_size for info in infos)
    budget.check_bytes(declared)
    free = shutil.disk_usage(root).free
    if declared > free:
        raise _OverBudget(f"it declares {declared:,} bytes, {free:,} free on {root.parent}")


def _extract_zip(archive: Path, root: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_declared(infos, root, budget)
        for info in infos:
            budget.member()
            name = info.filename
            parts = _parts(name)
            if not parts:
                continue
            mode = info.external_attr >> 16
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                raise _Unsafe(f"member {name!r} is a device or fifo")
            if stat.S_ISSOCK(mode):
                raise _Unsafe(f"member {name!r} is a socket")
            dest = _destination(root, name, parts)
            if info.is_dir():
                with write_errors(dest):
                    dest.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8")
                _check_symlink(root, name, parts, link)
                with write_errors(dest):
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(link, dest)
            else:
                with write_errors(dest):
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        pump(budget.counted(src.read), out, dest)
                if mode & 0o111:
                    dest.chmod(0o755)
