"""YouTube Faces (YTF): ``splits.txt`` read and written byte-exact, and frame listing.

``splits.txt``: one header line, then one line per video pair,
``"<split>, <pair>, <Name>/<video>, <Name>/<video>, <is same>"`` (fields separated by
``", "``, is-same 1/0); 10 splits x 500 pairs (250 same + 250 different). Videos are
folders ``frame_images_DB/<Name>/<video>/<video>.<frame>.jpg``; the aligned copies are
``aligned_images_DB/<Name>/<video>/aligned_detect_<video>.<frame>.jpg``.

The header is kept verbatim (its exact wording was not confirmed from a copy of the file;
:data:`DEFAULT_HEADER` is the wording in our reference notes). The writer emits ``", "``,
``\\n`` line ends and a final newline; a file in that form reads and rewrites byte for byte
(other spacing around the commas reads fine and is rewritten in that form; trailing blank
lines are dropped). Pairs are not assumed to be grouped same-first or different-first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arcflow.atomic import atomic_file
from arcflow.data.protocols.text import text_lines
from arcflow.errors import DataFormatError

DEFAULT_HEADER = "split number, pair number, first name, second name, is same"
FRAME_DIRS = ("frame_images_DB", "aligned_images_DB")


@dataclass(frozen=True)
class VideoPair:
    """One pair of videos, each named ``"<Name>/<video>"``."""

    split: int
    number: int
    video1: str
    video2: str
    same: bool


@dataclass(frozen=True)
class YTFSplits:
    """All pairs in file order, and the header line as read (None if the file had none)."""

    pairs: tuple[VideoPair, ...]
    header: str | None = DEFAULT_HEADER

    def split(self, number: int) -> tuple[VideoPair, ...]:
        """The pairs of split ``number`` (1-based) in file order."""
        return tuple(p for p in self.pairs if p.split == number)


def _check_video(name: str) -> None:
    person, sep, video = name.partition("/")
    if not sep or not person or not video or "/" in video:
        raise ValueError(f"video {name!r} is not '<Name>/<video>'")


def _parse(line: str) -> VideoPair:
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 5:
        raise ValueError(f"expected 5 comma-separated fields, got {len(fields)}")
    split, number, video1, video2, same = fields
    _check_video(video1)
    _check_video(video2)
    if same not in ("0", "1"):
        raise ValueError(f"is-same must be 0 or 1, got {same!r}")
    return VideoPair(int(split), int(number), video1, video2, same == "1")


def read_splits(path: str | Path) -> YTFSplits:
    """Parse ``splits.txt``; a malformed line raises DataFormatError naming file and line."""
    path = Path(path)
    lines = text_lines(path)
    if not lines:
        raise DataFormatError(f"{path}: empty splits file")
    header: str | None = lines[0]
    start = 2
    if lines[0].split(",")[0].strip().isdigit():
        header, start = None, 1  # the first line is a pair line: no header
    pairs = []
    for lineno, line in enumerate(lines[start - 1 :], start=start):
        try:
            pairs.append(_parse(line))
        except ValueError as exc:
            raise DataFormatError(f"{path}:{lineno}: bad pair line {line!r} ({exc})") from None
    return YTFSplits(tuple(pairs), header)


def write_splits(path: str | Path, splits: YTFSplits) -> None:
    """Write ``splits.txt`` (header, then one line per pair), atomically."""
    lines = [] if splits.header is None else [splits.header]
    for pair in splits.pairs:
        _check_video(pair.video1)
        _check_video(pair.video2)
        lines.append(f"{pair.split}, {pair.number}, {pair.video1}, {pair.video2}, {int(pair.same)}")
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def video_dir(
    root: str | Path,
    video: str,
    db: Literal["frame_images_DB", "aligned_images_DB"] = "frame_images_DB",
) -> Path:
    """The folder of ``video`` (``"<Name>/<video>"``) under ``<root>/<db>``."""
    _check_video(video)
    return Path(root) / db / video


def frame_number(filename: str, video: str) -> int:
    """Frame number of ``<video>.<frame>.jpg`` or ``aligned_detect_<video>.<frame>.jpg``."""
    stem, dot, ext = filename.rpartition(".")
    prefix, dot2, frame = stem.rpartition(".")
    if (
        not dot
        or ext.lower() != "jpg"
        or not dot2
        or not frame.isdigit()
        or not (prefix == video or prefix.endswith(f"_{video}"))
    ):
        raise ValueError(f"{filename!r} is not '<video>.<frame>.jpg' for video {video!r}")
    return int(frame)


def list_video_frames(directory: str | Path) -> list[Path]:
    """The ``.jpg`` frames of one video folder, in frame order (hidden files skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFormatError(f"{directory}: no such video folder")
    video = directory.name
    numbered: dict[int, Path] = {}
    for entry in directory.iterdir():
        if entry.name.startswith(".") or entry.suffix.lower() != ".jpg" or not entry.is_file():
            continue
        try:
            number = frame_number(entry.name, video)
        except ValueError as exc:
            raise DataFormatError(f"{entry}: unexpected frame name ({exc})") from None
        if number in numbered:
            raise DataFormatError(f"{entry}: frame {number} also in {numbered[number].name}")
        numbered[number] = entry
    if not numbered:
        raise DataFormatError(f"{directory}: no frames")
    return [numbered[n] for n in sorted(numbered)]


def video_frames(
    root: str | Path,
    video: str,
    db: Literal["frame_images_DB", "aligned_images_DB"] = "frame_images_DB",
) -> list[Path]:
    """Frames of ``video`` under ``<root>/<db>`` in frame order."""
    return list_video_frames(video_dir(root, video, db))
