"""Aligned image sets: named face crops packed as RecordIO, looked up by name.

Evaluation protocols (IJB templates, MegaFace lists, YTF videos) refer to images by their
relative names, not by pair. The align stage packs each such set as ``<prefix>.rec|.idx``
(record ``i``: an IRHeader with label ``i`` followed by the JPEG crop, the insightface record
layout) plus ``<prefix>.names``, one name per line, line ``i`` naming record ``i``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from arcflow.atomic import atomic_file
from arcflow.data.recordio import IRHeader, RecordReader, RecordWriter, pack, unpack
from arcflow.errors import DataFormatError


def _paths(prefix: Path) -> tuple[Path, Path, Path]:
    return (
        prefix.with_name(prefix.name + ".rec"),
        prefix.with_name(prefix.name + ".idx"),
        prefix.with_name(prefix.name + ".names"),
    )


def write_image_set(prefix: str | Path, crops: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(name, jpeg)`` crops as ``prefix.rec|.idx|.names``; returns the count.

    Names must be unique and free of line breaks.
    """
    rec, idx, names_path = _paths(Path(prefix))
    names: list[str] = []
    seen: set[str] = set()
    with RecordWriter(rec, idx) as writer:
        for i, (name, jpeg) in enumerate(crops):
            if "\n" in name or "\r" in name or name in seen:
                raise ValueError(f"{rec}: image name {name!r} is duplicated or has a line break")
            seen.add(name)
            names.append(name)
            writer.write(pack(IRHeader(0, float(i), i, 0), jpeg), key=i)
    with atomic_file(names_path) as tmp:
        tmp.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return len(names)


class ImageSet:
    """Read side: ``len``, ``names``, ``crop(name)`` and ``crop_at(i)`` (JPEG bytes)."""

    def __init__(self, prefix: str | Path) -> None:
        rec, idx, names_path = _paths(Path(prefix))
        self.names: list[str] = names_path.read_text(encoding="utf-8").splitlines()
        self._position = {name: i for i, name in enumerate(self.names)}
        self._reader = RecordReader(rec, idx)
        if len(self._reader) != len(self.names):
            raise DataFormatError(
                f"{names_path}: {len(self.names)} names but {rec} holds {len(self._reader)} records"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._position

    def crop_at(self, i: int) -> bytes:
        """The JPEG crop of record ``i``."""
        return unpack(self._reader.read(i))[1]

    def crop(self, name: str) -> bytes:
        """The JPEG crop of the image ``name``."""
        if name not in self._position:
            raise DataFormatError(f"{self._reader.rec_path}: no image named {name!r}")
        return self.crop_at(self._position[name])

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> ImageSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
