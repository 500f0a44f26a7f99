"""MXNet RecordIO (.rec/.idx) as insightface uses it, without MXNet.

On-disk record: ``<magic u32 LE> <lrec u32 LE> <data> <zero pad to 4>`` where
``lrec = cflag << 29 | len(data)``. A payload that contains the magic at a 4-aligned
offset is split there into parts (cflag 1 = start, 2 = middle, 3 = end; 0 = whole) and
the magic is dropped; the reader re-joins the parts with the magic in between.
The ``.idx`` file holds ``<key>\\t<byte offset>`` lines.

A payload is an ``IRHeader`` (``<IfQQ``, 24 bytes), then ``flag`` float32 labels when
``flag > 0``, then the data (for face datasets: JPEG bytes; decoding happens elsewhere).
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

import numpy as np

from arcflow.errors import DataFormatError

MAGIC = 0xCED7230A
MAX_LENGTH = (1 << 29) - 1
CFLAG_FULL, CFLAG_START, CFLAG_MIDDLE, CFLAG_END = 0, 1, 2, 3

_MAGIC_BYTES = struct.pack("<I", MAGIC)
_REC_HEAD = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
IR_SIZE = _IR.size  # 24
_F32_EXACT = 1 << 24  # largest integer range float32 labels hold exactly

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- payloads


class IRHeader(NamedTuple):
    """Image-record header: ``flag`` = number of array labels (0 for a scalar label)."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack(header: IRHeader, data: bytes = b"") -> bytes:
    """Encode ``header`` + ``data`` as a payload; ``flag`` is derived from the label."""
    if isinstance(header.label, int | float | np.number):
        head = _IR.pack(0, float(header.label), header.id, header.id2)
        return head + bytes(data)
    labels = np.asarray(header.label, dtype="<f4").ravel()
    head = _IR.pack(labels.size, 0.0, header.id, header.id2)
    return head + labels.tobytes() + bytes(data)


def unpack(payload: bytes) -> tuple[IRHeader, bytes]:
    """Decode a payload into its header and data; array labels come back as float32 tuples."""
    if len(payload) < IR_SIZE:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than IRHeader ({IR_SIZE})")
    flag, label, key, key2 = _IR.unpack_from(payload)
    if flag == 0:
        return IRHeader(0, label, key, key2), bytes(payload[IR_SIZE:])
    end = IR_SIZE + 4 * flag
    if len(payload) < end:
        raise ValueError(f"payload announces {flag} labels but has only {len(payload)} bytes")
    labels = tuple(np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_SIZE).tolist())
    return IRHeader(flag, labels, key, key2), bytes(payload[end:])


# --------------------------------------------------------------------------- encoding


def _aligned_magic_positions(payload: bytes) -> list[int]:
    """4-aligned offsets where the magic occurs inside ``payload`` (whole word only)."""
    found: list[int] = []
    pos = payload.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            found.append(pos)
            pos = payload.find(_MAGIC_BYTES, pos + 4)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    return found


def _part(cflag: int, data: bytes) -> bytes:
    pad = -len(data) % 4
    return _REC_HEAD.pack(MAGIC, cflag << 29 | len(data)) + data + b"\0" * pad


def encode_record(payload: bytes) -> bytes:
    """Encode one payload as on-disk record bytes (split at aligned magic words)."""
    payload = bytes(payload)
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the RecordIO limit")
    cuts = _aligned_magic_positions(payload)
    if not cuts:
        return _part(CFLAG_FULL, payload)
    parts, start = [], 0
    for i, cut in enumerate(cuts):
        parts.append(_part(CFLAG_START if i == 0 else CFLAG_MIDDLE, payload[start:cut]))
        start = cut + 4
    parts.append(_part(CFLAG_END, payload[start:]))
    return b"".join(parts)


# --------------------------------------------------------------------------- writer


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")


def _default_idx(rec_path: Path) -> Path:
    return rec_path.with_suffix(".idx")


class RecordWriter:
    """Write an indexed .rec/.idx pair atomically (temp files renamed on :meth:`close`).

    Leaving a ``with`` block by an exception removes the temp files; nothing appears at
    the final paths. ``write(payload)`` without a key uses the next free integer key.
    """

    def __init__(self, rec_path: PathLike, idx_path: PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else _default_idx(self.rec_path)
        self._tmp_rec = _temp_path(self.rec_path)
        self._tmp_idx = _temp_path(self.idx_path)
        self._rec: IO[bytes] | None = open(self._tmp_rec, "xb")  # noqa: SIM115
        try:
            self._idx: IO[str] | None = open(self._tmp_idx, "x", encoding="ascii")  # noqa: SIM115
        except BaseException:
            self._rec.close()
            self._tmp_rec.unlink(missing_ok=True)
            raise
        self._offsets: dict[int, int] = {}
        self._pos = 0
        self._next_key = 0

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self._offsets)

    def write(self, payload: bytes, key: int | None = None) -> int:
        """Append one record; returns its key."""
        rec, idx = self._open_handles()
        key = self._next_key if key is None else int(key)
        if key in self._offsets:
            raise ValueError(f"duplicate record key {key} for {self.rec_path}")
        record = encode_record(payload)
        rec.write(record)
        idx.write(f"{key}\t{self._pos}\n")
        self._offsets[key] = self._pos
        self._pos += len(record)
        self._next_key = max(self._next_key, key + 1)
        return key

    def _rewrite(self, key: int, payload: bytes) -> None:
        """Replace record ``key`` in place; the encoded size must not change."""
        rec, _ = self._open_handles()
        offset = self._offsets[key]
        record = encode_record(payload)
        end = min((o for o in self._offsets.values() if o > offset), default=self._pos)
        if len(record) != end - offset:
            raise ValueError(f"record {key}: rewrite must keep its size ({end - offset} bytes)")
        rec.seek(offset)
        rec.write(record)
        rec.seek(self._pos)

    def _open_handles(self) -> tuple[IO[bytes], IO[str]]:
        if self._rec is None or self._idx is None:
            raise ValueError(f"RecordWriter for {self.rec_path} is closed")
        return self._rec, self._idx

    def close(self) -> None:
        """Flush and move the temp files to their final paths."""
        if self._rec is None or self._idx is None:
            return
        try:
            for handle in (self._rec, self._idx):
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            os.replace(self._tmp_rec, self.rec_path)
            os.replace(self._tmp_idx, self.idx_path)
        except BaseException:
            self.abort()
            raise
        finally:
            self._rec = self._idx = None

    def abort(self) -> None:
        """Discard everything written; the final paths are not touched."""
        for handle in (self._rec, self._idx):
            if handle is not None:
                handle.close()
        self._rec = self._idx = None
        self._tmp_rec.unlink(missing_ok=True)
        self._tmp_idx.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reader


def _parse_idx(idx_path: Path, rec_path: Path, rec_size: int) -> dict[int, int]:
    """Read ``key\\toffset`` lines; every offset must leave room for a record header."""
    offsets: dict[int, int] = {}
    with open(idx_path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                key, offset = int(fields[0]), int(fields[1])
                if len(fields) != 2:
                    raise ValueError
            except (ValueError, IndexError):
                raise DataFormatError(
                    f"{idx_path}: line {lineno}: malformed entry {line[:80]!r}"
                ) from None
            if key in offsets:
                raise DataFormatError(f"{idx_path}: line {lineno}: duplicate key {key}")
            if offset < 0 or offset + _REC_HEAD.size > rec_size:
                raise DataFormatError(
                    f"{idx_path}: line {lineno}: byte offset {offset} is past the end of "
                    f"{rec_path} ({rec_size} bytes)"
                )
            offsets[key] = offset
    return offsets


class RecordReader:
    """Random access (through the .idx) and sequential scans over a .rec file.

    ``idx_path`` defaults to the sibling ``.idx``; when there is none, the index is built
    by one sequential scan and keys are the record ordinals 0, 1, 2, ...
    The file is memory-mapped, so forked DataLoader workers can share a reader safely.
    """

    def __init__(self, rec_path: PathLike, idx_path: PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else _default_idx(self.rec_path)
        self._explicit_idx = idx_path is not None
        self._open()
        try:
            if self.idx_path.exists() or self._explicit_idx:
                self._offsets = _parse_idx(self.idx_path, self.rec_path, self._size)
            else:
                self._offsets = dict(enumerate(self._scan_offsets()))
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        with open(self.rec_path, "rb") as f:
            self._size = os.fstat(f.fileno()).st_size
            self._mm: mmap.mmap | bytes | None = (
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self._size else b""
            )

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_mm"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._open()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the memory map."""
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._mm = None

    @property
    def keys(self) -> list[int]:
        """Record keys in index order."""
        return list(self._offsets)

    def offset(self, key: int) -> int:
        """Byte offset of record ``key`` (KeyError if absent)."""
        return self._offsets[key]

    def __len__(self) -> int:
        return len(self._offsets)

    def __contains__(self, key: object) -> bool:
        return key in self._offsets

    def read(self, key: int) -> bytes:
        """Payload of record ``key`` (KeyError if the index lacks it)."""
        return self._read_at(self._offsets[key])[0]

    def __iter__(self) -> Iterator[bytes]:
        """Payloads in file order; does not use the index."""
        pos = 0
        while pos < self._size:
            payload, pos = self._read_at(pos)
            yield payload

    def _scan_offsets(self) -> Iterator[int]:
        pos = 0
        while pos < self._size:
            start = pos
            pos = self._read_at(pos)[1]
            yield start

    def _buffer(self) -> mmap.mmap | bytes:
        if self._mm is None:
            raise ValueError(f"RecordReader for {self.rec_path} is closed")
        return self._mm

    def _part_at(self, pos: int) -> tuple[int, int, int]:
        """(cflag, data start, data length) of the part whose header is at ``pos``."""
        mm = self._buffer()
        if pos + 8 > self._size:
            raise DataFormatError(
                f"{self.rec_path}: byte offset {pos}: truncated record header "
                f"(file has {self._size} bytes)"
            )
        magic, lrec = _REC_HEAD.unpack_from(mm, pos)
        if magic != MAGIC:
            raise DataFormatError(
                f"{self.rec_path}: byte offset {pos}: bad magic 0x{magic:08x} "
                f"(expected 0x{MAGIC:08x})"
            )
        cflag, length = lrec >> 29, lrec & MAX_LENGTH
        if cflag > CFLAG_END:
            raise DataFormatError(f"{self.rec_path}: byte offset {pos}: invalid cflag {cflag}")
        if pos + 8 + length > self._size:
            raise DataFormatError(
                f"{self.rec_path}: byte offset {pos}: truncated record, {length} data bytes "
                f"announced but the file ends at {self._size}"
            )
        return cflag, pos + 8, length

    def _read_at(self, pos: int) -> tuple[bytes, int]:
        """Payload of the record at ``pos`` and the offset of the next record."""
        cflag, start, length = self._part_at(pos)
        nxt = start + length + (-length % 4)
        if cflag == CFLAG_FULL:
            return self._mm[start : start + length], nxt
        if cflag != CFLAG_START:
            raise DataFormatError(
                f"{self.rec_path}: byte offset {pos}: record starts with cflag {cflag}"
            )
        pieces = [self._mm[start : start + length]]
        while cflag != CFLAG_END:
            part_pos = nxt
            if part_pos >= self._size:
                raise DataFormatError(
                    f"{self.rec_path}: byte offset {part_pos}: multi-part record from offset "
                    f"{pos} is missing its end part"
                )
            cflag, start, length = self._part_at(part_pos)
            if cflag not in (CFLAG_MIDDLE, CFLAG_END):
                raise DataFormatError(
                    f"{self.rec_path}: byte offset {part_pos}: cflag {cflag} inside the "
                    f"multi-part record that starts at offset {pos}"
                )
            pieces.append(self._mm[start : start + length])
            nxt = start + length + (-length % 4)
        return _MAGIC_BYTES.join(pieces), nxt

    def header_labels(self, keys: Sequence[int]) -> np.ndarray:
        """First label (float32) of each record in ``keys``, reading headers only.

        Whole, aligned records with a scalar label are read vectorised (4-byte words at
        offset + 0 / 4 / 8 / 12: magic, lrec, flag, label); any other record is parsed.
        """
        offsets = np.fromiter((self._offsets[k] for k in keys), dtype=np.int64, count=len(keys))
        out = np.empty(len(keys), dtype=np.float32)
        fast = (offsets % 4 == 0) & (offsets + 8 + IR_SIZE <= self._size)
        words = _words_at(self._buffer(), self._size, np.where(fast, offsets // 4, 0))
        fast &= (words[:, 0] == MAGIC) & (words[:, 1] >> 29 == 0) & (words[:, 2] == 0)
        fast &= (words[:, 1] & MAX_LENGTH) >= IR_SIZE
        out[fast] = words[fast, 3].view(np.float32)
        for i in np.flatnonzero(~fast):
            out[i] = _first_label(self._checked_unpack(int(keys[i])))
        return out

    def _checked_unpack(self, key: int) -> IRHeader:
        try:
            return unpack(self.read(key))[0]
        except ValueError as e:
            raise DataFormatError(
                f"{self.rec_path}: byte offset {self._offsets[key]}: record {key}: {e}"
            ) from None


def _words_at(buf: mmap.mmap | bytes, size: int, word_index: np.ndarray) -> np.ndarray:
    """Copy of the 4 little-endian uint32 words starting at each ``word_index`` (n x 4)."""
    if size < 16:
        return np.zeros((len(word_index), 4), dtype="<u4")
    words = np.frombuffer(buf, dtype="<u4", count=size // 4)
    try:
        return words[word_index[:, None] + np.arange(4)]  # fancy indexing copies
    finally:
        del words  # no view may outlive this call, or mmap.close() fails


def _first_label(header: IRHeader) -> float:
    label = header.label
    return float(label if isinstance(label, float | int) else label[0])


# --------------------------------------------------------------------------- insightface


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
        writer._rewrite(0, pack(IRHeader(2, (float(id_start), float(id_end)), 0, 0)))
    height, width = image_size
    _write_text_atomic(out / "property", f"{len(ranges)},{height},{width}\n")
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
    if key > _F32_EXACT:
        raise ValueError(f"key {key} exceeds 2**24; float32 labels could not store it exactly")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _temp_path(path)
    try:
        tmp.write_text(text, encoding="ascii")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    if not (0 < num_classes <= _F32_EXACT and 0 < height <= 4096 and 0 < width <= 4096):
        raise DataFormatError(f"{path}: line 1: {text[:80]!r}: values out of range")
    return num_classes, height, width


def _header0_range(reader: RecordReader) -> tuple[int, int] | None:
    """``(id_start, id_end)`` when record 0 is an insightface header0, else None; both must
    be integers inside the index (an image key range can never outnumber its records)."""
    if 0 not in reader:
        return None
    header = reader._checked_unpack(0)
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
        num_classes = int(min(finite.max(), _F32_EXACT)) + 1 if len(finite) else 0
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
        return int(_first_label(header)), data

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> FaceRecordDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
