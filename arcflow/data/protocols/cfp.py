"""CFP (Celebrities in Frontal-Profile): the raw protocol files, read and written byte-exact.

Layout of a release (the release's ``Readme.txt``)::

    Data/Images/<sss>/{frontal,profile}/<nn>.jpg   500 subjects x (10 frontal + 4 profile)
    Protocol/Pair_list_F.txt                       "<index> <path>", index 1..5000
    Protocol/Pair_list_P.txt                       "<index> <path>", index 1..2000
    Protocol/Split/{FF,FP}/<kk>/{same,diff}.txt    kk = 01..10; 350 "i,j" lines each

List paths are relative to ``Protocol/`` (``../Data/Images/001/frontal/01.jpg``). In a split
file ``i`` is a 1-based index into the frontal list and ``j`` one into the frontal (FF) or
profile (FP) list. Our writer emits one space, "," without spaces, ``\\n`` line ends and a
final newline; a file in that form reads and rewrites byte for byte (other whitespace is
read, and rewritten in that form; trailing blank lines are dropped).

Pair order of :func:`read_cfp`: split 01, its same pairs then its diff pairs, then split 02,
... (700 per split). Contiguous 10-fold cross-validation (``KFold(10, shuffle=False)``) over
that list reproduces the official identity-disjoint splits, which is why this order is used.
insightface packed ``cfp_fp.bin`` from its own pairs ``.mat`` (``src/data/cfp2pack.py`` reads
path1, path2, fold and label per pair), so the order of that .bin could not be checked here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arcflow.atomic import atomic_dir
from arcflow.data.protocols.text import text_lines
from arcflow.errors import DataFormatError

CFPProtocol = Literal["FF", "FP"]
PROTOCOLS: tuple[CFPProtocol, ...] = ("FF", "FP")
FOLDS = 10
PAIRS_PER_HALF = 350  # same (and diff) pairs per split in the release


@dataclass(frozen=True)
class CFPSplit:
    """One split: 1-based (i, j) index pairs, same-identity and different-identity."""

    same: tuple[tuple[int, int], ...]
    diff: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class CFPRelease:
    """Everything under ``Protocol/``: both image lists and the splits of each protocol."""

    frontal: tuple[str, ...]  # entry k-1 is frontal index k, as written (relative to Protocol/)
    profile: tuple[str, ...]
    splits: Mapping[str, tuple[CFPSplit, ...]]  # "FF" / "FP" -> splits 01..NN


@dataclass(frozen=True)
class CFPPair:
    """A verification pair; paths are relative to the release root."""

    path1: str
    path2: str
    same: bool
    fold: int  # 1-based split number


def image_entry(subject: int, view: Literal["frontal", "profile"], number: int) -> str:
    """The pair-list path of an image: ``../Data/Images/001/frontal/01.jpg``."""
    return f"../Data/Images/{subject:03d}/{view}/{number:02d}.jpg"


def read_pair_list(path: str | Path) -> tuple[str, ...]:
    """Parse ``Pair_list_{F,P}.txt``; entry ``k-1`` is the path of index ``k``."""
    path = Path(path)
    entries = []
    for lineno, line in enumerate(text_lines(path), start=1):
        fields = line.split()
        if len(fields) != 2:
            raise DataFormatError(
                f"{path}:{lineno}: expected '<index> <path>', got {len(fields)} fields: {line!r}"
            )
        if fields[0] != str(lineno):
            raise DataFormatError(f"{path}:{lineno}: expected index {lineno}, got {fields[0]!r}")
        entries.append(fields[1])
    if not entries:
        raise DataFormatError(f"{path}: empty pair list")
    return tuple(entries)


def read_split_file(path: str | Path, n_first: int, n_second: int) -> tuple[tuple[int, int], ...]:
    """Parse a ``same.txt`` / ``diff.txt``; ``i`` must lie in 1..n_first, ``j`` in 1..n_second."""
    path = Path(path)
    pairs = []
    for lineno, line in enumerate(text_lines(path), start=1):
        fields = line.split(",")
        try:
            if len(fields) != 2:
                raise ValueError(f"expected 2 comma-separated fields, got {len(fields)}")
            i, j = int(fields[0]), int(fields[1])
        except ValueError as exc:
            raise DataFormatError(f"{path}:{lineno}: bad pair line {line!r} ({exc})") from None
        if not (1 <= i <= n_first and 1 <= j <= n_second):
            raise DataFormatError(
                f"{path}:{lineno}: index out of range in {line!r} "
                f"(allowed 1..{n_first}, 1..{n_second})"
            )
        pairs.append((i, j))
    return tuple(pairs)


def _read_splits(
    protocol_dir: Path, protocol: CFPProtocol, n_frontal: int, n_second: int, folds: int
) -> tuple[CFPSplit, ...]:
    splits = []
    for k in range(1, folds + 1):
        split_dir = protocol_dir / "Split" / protocol / f"{k:02d}"
        same = read_split_file(split_dir / "same.txt", n_frontal, n_second)
        diff = read_split_file(split_dir / "diff.txt", n_frontal, n_second)
        splits.append(CFPSplit(same, diff))
    return tuple(splits)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"CFP protocol must be 'FF' or 'FP', got {protocol!r}")


def read_cfp_release(
    root: str | Path, protocols: Sequence[CFPProtocol] = PROTOCOLS, folds: int = FOLDS
) -> CFPRelease:
    """Read ``<root>/Protocol``: both lists and ``folds`` splits of each protocol."""
    protocol_dir = Path(root) / "Protocol"
    frontal = read_pair_list(protocol_dir / "Pair_list_F.txt")
    profile = read_pair_list(protocol_dir / "Pair_list_P.txt")
    splits = {}
    for protocol in protocols:
        _check_protocol(protocol)
        n_second = len(frontal) if protocol == "FF" else len(profile)
        splits[protocol] = _read_splits(protocol_dir, protocol, len(frontal), n_second, folds)
    return CFPRelease(frontal, profile, splits)


def read_cfp(root: str | Path, protocol: CFPProtocol, folds: int = FOLDS) -> list[CFPPair]:
    """All pairs of ``protocol`` in fold order: per split, its same pairs then its diff pairs."""
    _check_protocol(protocol)
    release = read_cfp_release(root, (protocol,), folds)
    second = release.frontal if protocol == "FF" else release.profile

    def resolve(entry: str) -> str:
        return posixpath.normpath(posixpath.join("Protocol", entry))

    pairs = []
    for fold, split in enumerate(release.splits[protocol], start=1):
        for same, index_pairs in ((True, split.same), (False, split.diff)):
            for i, j in index_pairs:
                pairs.append(
                    CFPPair(resolve(release.frontal[i - 1]), resolve(second[j - 1]), same, fold)
                )
    return pairs


def _check_entries(name: str, entries: Sequence[str]) -> None:
    if not entries:
        raise ValueError(f"{name} is empty")
    for k, entry in enumerate(entries, start=1):
        if not entry or any(ch.isspace() for ch in entry):
            raise ValueError(f"{name}[{k - 1}] = {entry!r}: must be non-empty, no whitespace")


def write_cfp(
    root: str | Path,
    frontal_paths: Sequence[str],
    profile_paths: Sequence[str],
    splits: Mapping[str, Sequence[CFPSplit]],
) -> None:
    """Write ``<root>/Protocol`` (lists and splits) in the release layout, atomically.

    ``frontal_paths[k-1]`` / ``profile_paths[k-1]`` are the list entries of index ``k``
    (relative to ``Protocol/``, see :func:`image_entry`); ``splits`` maps "FF" and/or "FP"
    to the splits, written as ``01``, ``02``, ... The whole ``Protocol/`` directory is
    replaced in one step.
    """
    _check_entries("frontal_paths", frontal_paths)
    _check_entries("profile_paths", profile_paths)
    for protocol, protocol_splits in splits.items():
        _check_protocol(protocol)
        n_second = len(frontal_paths) if protocol == "FF" else len(profile_paths)
        for k, split in enumerate(protocol_splits, start=1):
            for i, j in (*split.same, *split.diff):
                if not (1 <= i <= len(frontal_paths) and 1 <= j <= n_second):
                    raise ValueError(
                        f"{protocol} split {k:02d}: index pair ({i}, {j}) out of range"
                    )

    def list_text(entries: Sequence[str]) -> str:
        return "".join(f"{k} {entry}\n" for k, entry in enumerate(entries, start=1))

    def pairs_text(pairs: Sequence[tuple[int, int]]) -> str:
        return "".join(f"{i},{j}\n" for i, j in pairs)

    with atomic_dir(Path(root) / "Protocol") as tmp:
        (tmp / "Pair_list_F.txt").write_text(list_text(frontal_paths), encoding="utf-8")
        (tmp / "Pair_list_P.txt").write_text(list_text(profile_paths), encoding="utf-8")
        for protocol, protocol_splits in splits.items():
            for k, split in enumerate(protocol_splits, start=1):
                split_dir = tmp / "Split" / protocol / f"{k:02d}"
                split_dir.mkdir(parents=True)
                (split_dir / "same.txt").write_text(pairs_text(split.same), encoding="utf-8")
                (split_dir / "diff.txt").write_text(pairs_text(split.diff), encoding="utf-8")
