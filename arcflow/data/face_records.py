"""insightface's face-dataset layout on RecordIO: ``train.rec/.idx`` + ``property``.

Key 0 is header0 with label ``[id_start, id_end]``; keys ``1 … id_start-1`` are images
(label = identity); keys ``id_start … id_end-1`` hold one record per identity with label
``[first, end)`` of its image keys. Everything read is checked against the index (labels
finite, integral, ``0 <= label < num_classes``; header0 and ranges inside the index) before
it is used as a size, index or label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arcflow.atomic import atomic_file
from arcflow.data.recordio import (
    F32_EXACT,
    IRHeader,
    PathLike,
    RecordReader,
    RecordWriter,
    first_label,
    pack,
    unpack,
)
from arcflow.errors import DataFormatError


@dataclass(frozen=True)
class FaceDatasetIndex:
    """What an insightface train.rec holds: image keys and their integer labels."""

    num_classes: int
    image_keys: np.ndarray  # int64
    labels: np.ndarray  # int64, aligned with image_keys


def write_face_dataset(
    out_dir: PathLike,
    samples: Iterable[tuple[int, bytes]],
    *,
    image_size: tuple[int, int] = (112, 112),
    num_classes: int | None = None,
) -> tuple[int, int]:
    """Write train.rec/train.idx/property from ``(label, jpeg)`` samples grouped by label.

    Labels must run 0, 1, ..., C-1 in order, each group contiguous (ValueError otherwise).
    Layout: key 0 = header0 with label ``[id_start, id_end]``; keys 1..id_start-1 = images;
    keys id_start..id_end-1 = one record per identity with label ``[first, end)`` image keys.
    Returns ``(num_images, num_classes)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RecordWriter(out / "train.rec", out / "train.idx") as writer:
        writer.write(pack(IRHeader(2, (0.0, 0.0), 0, 0)), key=0)  # patched below
        ranges = _write_face_images(writer, samples)
        if num_classes is not None and num_classes != len(ranges):
            raise ValueError(f"num_classes={num_classes} but the samples hold {len(ranges)}")
        id_start = len(writer)
        id_end = id_start + len(ranges)
        _check_exact(id_end)
        for key, (first, end) in enumerate(ranges, start=id_start):
            writer.write(pack(IRHeader(2, (float(first), float(end)), key, 0)), key=key)
        writer.rewrite(0, pack(IRHeader(2, (float(id_start), float(id_end)), 0, 0)))
    height, width = image_size
    with atomic_file(out / "property") as tmp:
        tmp.write_text(f"{len(ranges)},{height},{width}\n", encoding="ascii")
    return id_start - 1, len(ranges)


def _write_face_images(
    writer: RecordWriter, samples: Iterable[tuple[int, bytes]]
) -> list[tuple[int, int]]:
    """Write image records from key 1 on; returns the ``[first, end)`` key range per class."""
    ranges: list[tuple[int, int]] = []
    key = 1
    for position, (label, jpeg) in enumerate(samples):
        label = int(label)
        if label != len(ranges) - 1:
            if label != len(ranges):
                raise ValueError(
                    f"sample {position}: label {label} out of order; labels must be grouped "
                    f"and run 0..C-1 (expected {len(ranges) - 1} or {len(ranges)})"
                )
            ranges.append((key, key))
        _check_exact(key)
        writer.write(pack(IRHeader(0, float(label), key, 0), jpeg), key=key)
        key += 1
        ranges[-1] = (ranges[-1][0], key)
    if not ranges:
        raise ValueError("no samples to write")
    return ranges


def _check_exact(key: int) -> None:
    if key > F32_EXACT:
        raise ValueError(f"key {key} exceeds 2**24; float32 labels could not store it exactly")


def read_face_property(rec_dir: PathLike) -> tuple[int, int, int]:
    """``(num_classes, height, width)`` from ``rec_dir/property``, each checked positive."""
    path = Path(rec_dir) / "property"
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        num_classes, height, width = (int(x) for x in text.split(","))
    except ValueError:
        raise DataFormatError(
            f"{path}: line 1: expected 'num_classes,height,width', got {text[:80]!r}"
        ) from None
    if not (0 < num_classes <= F32_EXACT and 0 < height <= 4096 and 0 < width <= 4096):
        raise DataFormatError(f"{path}: line 1: {text[:80]!r}: values out of range")
    return num_classes, height, width


def _header0_range(reader: RecordReader) -> tuple[int, int] | None:
    """``(id_start, id_end)`` when record 0 is an insightface header0, else None; both must
    be integers inside the index (an image key range can never outnumber its records)."""
    if 0 not in reader:
        return None
    header = reader.checked_unpack(0)
    if header.flag == 0:
        return None
    where = f"{reader.rec_path}: byte offset {reader.offset(0)}: header0"
    if header.flag < 2:
        raise DataFormatError(f"{where} has {header.flag} label(s), expected 2")
    first, end = header.label[0], header.label[1]
    if not all(math.isfinite(v) and v == int(v) for v in (first, end)):
        raise DataFormatError(f"{where} range [{first}, {end}) is not two integers")
    id_start, id_end = int(first), int(end)
    if not 1 <= id_start <= id_end <= len(reader) + 1 or id_end - id_start > len(reader):
        raise DataFormatError(
            f"{where} range [{id_start}, {id_end}) is invalid for an index of {len(reader)} records"
        )
    return id_start, id_end


def _checked_labels(labels: np.ndarray, keys: np.ndarray, num_classes: int, where: str) -> None:
    """Every label finite, integral and in ``[0, num_classes)``; the first bad one named."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(labels) | (labels != np.floor(labels))
        bad |= (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{where}: record {int(keys[i])}: label {float(labels[i])!r} is not an integer in "
            f"[0, {num_classes}) ({int(bad.sum())} such labels)",
            hint="num_classes comes from property, else header0, else the largest label + 1",
        )


def _face_index(reader: RecordReader, rec_dir: Path) -> FaceDatasetIndex:
    header0 = _header0_range(reader)
    if header0 is None:
        keys = np.asarray(reader.keys, dtype=np.int64)
    else:
        keys = np.arange(1, header0[0], dtype=np.int64)
        missing = next((k for k in range(1, header0[0]) if k not in reader), None)
        if missing is not None:
            raise DataFormatError(
                f"{reader.idx_path}: image key {missing} has no entry (header0 at byte offset "
                f"{reader.offset(0)} of {reader.rec_path} says keys 1..{header0[0] - 1})"
            )
    raw = reader.header_labels(keys.tolist()).astype(np.float64)
    if (rec_dir / "property").exists():
        num_classes = read_face_property(rec_dir)[0]
        if header0 is not None and num_classes != header0[1] - header0[0]:
            raise DataFormatError(
                f"{rec_dir / 'property'}: {num_classes} classes, but header0 of "
                f"{reader.rec_path} lists {header0[1] - header0[0]} identities"
            )
    elif header0 is not None:
        num_classes = header0[1] - header0[0]
    else:
        finite = raw[np.isfinite(raw)]
        num_classes = int(min(finite.max(), F32_EXACT)) + 1 if len(finite) else 0
    _checked_labels(raw, keys, num_classes, str(reader.rec_path))
    return FaceDatasetIndex(num_classes, keys, raw.astype(np.int64))


def read_face_dataset_index(rec_dir: PathLike) -> tuple[int, np.ndarray, np.ndarray]:
    """``(num_classes, image_keys, labels)`` of ``rec_dir/train.rec`` (with or without header0)."""
    rec_dir = Path(rec_dir)
    with RecordReader(rec_dir / "train.rec") as reader:
        index = _face_index(reader, rec_dir)
    return index.num_classes, index.image_keys, index.labels


class FaceRecordDataset:
    """Insightface ``train.rec`` as ``(label, jpeg_bytes)`` items, like MXFaceDataset."""

    def __init__(self, rec_dir: PathLike) -> None:
        self.rec_dir = Path(rec_dir)
        self.reader = RecordReader(self.rec_dir / "train.rec")
        self.index = _face_index(self.reader, self.rec_dir)

    @property
    def num_classes(self) -> int:
        return self.index.num_classes

    def __len__(self) -> int:
        return len(self.index.image_keys)

    def __getitem__(self, i: int) -> tuple[int, bytes]:
        """``(label, jpeg bytes)`` of the ``i``-th image."""
        return self.get(int(self.index.image_keys[i]))

    def get(self, key: int) -> tuple[int, bytes]:
        """``(label, jpeg bytes)`` of the image record ``key``."""
        try:
            header, data = unpack(self.reader.read(key))
        except ValueError as e:
            raise DataFormatError(
                f"{self.reader.rec_path}: byte offset {self.reader.offset(key)}: record {key}: {e}"
            ) from None
        return int(first_label(header)), data

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> FaceRecordDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
