"""iQIYI-VID (2018) ground truth and submissions (videos are named ``IQIYI_VID_VAL_0000001.mp4``).

- ``gt_v2/train_v2.txt``: ``video_name label`` a line.
- ``gt_v2/val_v2.txt``: ``label video1 video2 ...`` a line, one line per identity.
- submission: ``label video1 ... video100`` a line, one line per identity, videos ranked best
  first, at most 100 (MAP@100). Label 0 marks unknown people: it is never a query.

Fields are single-space separated; reading tolerates any whitespace, writing uses one space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from arcflow.atomic import atomic_file
from arcflow.data.protocols.text import exact_lines
from arcflow.errors import DataFormatError

MAX_RESULTS = 100
UNKNOWN = 0


def read_train_gt(path: str | Path) -> dict[str, int]:
    """``train_v2.txt`` as {video: label}, in file order."""
    path = Path(path)
    out: dict[str, int] = {}
    for lineno, fields in _lines(path):
        if len(fields) != 2:
            raise DataFormatError(
                f"{path}:{lineno}: expected 'video_name label', got {' '.join(fields)!r}"
            )
        video, label = fields[0], _label(path, lineno, fields[1])
        if video in out:
            raise DataFormatError(f"{path}:{lineno}: video {video} listed twice")
        out[video] = label
    return out


def write_train_gt(path: str | Path, labels: Mapping[str, int]) -> None:
    """Write {video: label} as ``train_v2.txt``, atomically."""
    for video, label in labels.items():
        _check_video(video)
        _check_label(str(path), label)
    _write(path, [f"{video} {label}" for video, label in labels.items()])


def read_val_gt(path: str | Path) -> dict[int, tuple[str, ...]]:
    """``val_v2.txt`` as {label: videos}, in file order (label 0 = unknown people, if present)."""
    return _read_label_lines(Path(path), limit=None)


def write_val_gt(path: str | Path, gt: Mapping[int, Sequence[str]]) -> None:
    """Write {label: videos} as ``val_v2.txt``, atomically."""
    _write_label_lines(path, gt, limit=None)


def read_submission(path: str | Path) -> dict[int, tuple[str, ...]]:
    """A submission as {label: ranked videos}; > 100 videos, a repeated label or label 0 fail."""
    return _read_label_lines(Path(path), limit=MAX_RESULTS)


def write_submission(path: str | Path, ranking: Mapping[int, Sequence[str]]) -> None:
    """Write {label: ranked videos} as a submission, atomically (same checks as the reader)."""
    _write_label_lines(path, ranking, limit=MAX_RESULTS)


def queries(gt: Mapping[int, Sequence[str]]) -> dict[int, tuple[str, ...]]:
    """The identities that are queries: every label but 0 (unknown)."""
    return {label: tuple(videos) for label, videos in gt.items() if label != UNKNOWN}


def video_labels(gt: Mapping[int, Sequence[str]]) -> dict[str, int]:
    """Invert {label: videos} to {video: label}."""
    return {video: label for label, videos in gt.items() for video in videos}


# ---------------------------------------------------------------- helpers


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    lines = exact_lines(path)
    out = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            raise DataFormatError(f"{path}:{lineno}: empty line")
        out.append((lineno, fields))
    return out


def _label(path: Path, lineno: int, token: str) -> int:
    if not token.isascii() or not token.isdigit():
        raise DataFormatError(f"{path}:{lineno}: label {token!r} is not a non-negative integer")
    return int(token)


def _read_label_lines(path: Path, limit: int | None) -> dict[int, tuple[str, ...]]:
    out: dict[int, tuple[str, ...]] = {}
    seen: dict[str, int] = {}
    for lineno, fields in _lines(path):
        where = f"{path}:{lineno}"
        label, videos = _label(path, lineno, fields[0]), tuple(fields[1:])
        if label in out:
            raise DataFormatError(f"{where}: label {label} already on another line")
        _check_entry(where, label, videos, limit)
        if limit is None:
            for video in videos:
                if video in seen:
                    raise DataFormatError(
                        f"{where}: video {video} already under label {seen[video]}"
                    )
                seen[video] = label
        out[label] = videos
    return out


def _check_entry(where: str, label: int, videos: Sequence[str], limit: int | None) -> None:
    if not videos:
        raise DataFormatError(f"{where}: label {label} lists no videos")
    if limit is not None:
        if label == UNKNOWN:
            raise DataFormatError(f"{where}: label 0 (unknown) is not a query")
        if len(videos) > limit:
            raise DataFormatError(
                f"{where}: label {label} lists {len(videos)} videos, at most {limit}"
            )
        if len(set(videos)) != len(videos):
            raise DataFormatError(f"{where}: label {label} lists a video twice")


def _check_label(where: str, label: int) -> None:
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise DataFormatError(f"{where}: label {label!r} is not a non-negative integer")


def _check_video(video: str) -> None:
    if not video or len(video.split()) != 1 or video != video.strip():
        raise ValueError(f"bad video name {video!r}")


def _write_label_lines(
    path: str | Path, gt: Mapping[int, Sequence[str]], limit: int | None
) -> None:
    seen: set[str] = set()
    for label, videos in gt.items():
        _check_label(str(path), label)
        _check_entry(str(path), label, videos, limit)
        for video in videos:
            _check_video(video)
            if limit is None and video in seen:
                raise DataFormatError(f"{path}: video {video} under two labels")
            seen.add(video)
    _write(path, [" ".join([str(label), *videos]) for label, videos in gt.items()])


def _write(path: str | Path, lines: list[str]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8"))
