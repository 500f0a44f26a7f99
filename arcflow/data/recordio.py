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

import mmap
import os
import secrets
import struct
from collections.abc import Iterator, Sequence
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
F32_EXACT = 1 << 24  # largest integer range float32 labels hold exactly

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

    def rewrite(self, key: int, payload: bytes) -> None:
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
            out[i] = first_label(self.checked_unpack(int(keys[i])))
        return out

    def checked_unpack(self, key: int) -> IRHeader:
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


def first_label(header: IRHeader) -> float:
    label = header.label
    return float(label if isinstance(label, float | int) else label[0])
