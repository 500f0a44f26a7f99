"""MXNet RecordIO reader/writer and the insightface dataset layout."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest

from arcflow.data.face_records import FaceRecordDataset, read_face_dataset_index, write_face_dataset
from arcflow.data.recordio import MAGIC, IRHeader, RecordReader, RecordWriter, pack, unpack
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit

MAGIC_BYTES = struct.pack("<I", MAGIC)


def _parts_on_disk(rec: Path) -> list[tuple[int, int, int]]:
    """(offset, cflag, length) of every part header, parsed straight from the spec."""
    raw = rec.read_bytes()
    parts, pos = [], 0
    while pos < len(raw):
        magic, lrec = struct.unpack_from("<II", raw, pos)
        assert magic == MAGIC
        length = lrec & ((1 << 29) - 1)
        parts.append((pos, lrec >> 29, length))
        pos += 8 + length + (-length % 4)
    assert pos == len(raw)
    return parts


def _write(rec: Path, payloads: list[bytes]) -> None:
    with RecordWriter(rec) as writer:
        for payload in payloads:
            writer.write(payload)


# --------------------------------------------------------------------------- payloads


def test_pack_unpack_scalar_label() -> None:
    header, data = unpack(pack(IRHeader(0, 7.0, 42, 3), b"jpeg-bytes"))
    assert header == IRHeader(0, 7.0, 42, 3)
    assert data == b"jpeg-bytes"


def test_pack_unpack_array_label_sets_flag_and_stores_floats_before_data() -> None:
    payload = pack(IRHeader(0, (1.5, 2.0, -3.0), 9, 0), b"xyz")
    assert len(payload) == 24 + 3 * 4 + 3
    assert struct.unpack_from("<IfQQ", payload) == (3, 0.0, 9, 0)
    header, data = unpack(payload)
    assert header.flag == 3
    assert tuple(header.label) == (1.5, 2.0, -3.0)
    assert (header.id, data) == (9, b"xyz")


def test_record_bytes_match_the_spec_exactly(tmp_path: Path) -> None:
    payload = pack(IRHeader(0, 5.0, 1, 0), b"\xff\xd8\xff")  # 27 bytes
    rec = tmp_path / "one.rec"
    with RecordWriter(rec) as writer:
        writer.write(payload, key=1)
    expected = (
        struct.pack("<I", 0xCED7230A)
        + struct.pack("<I", (0 << 29) | 27)
        + struct.pack("<I", 0)  # flag
        + struct.pack("<f", 5.0)  # label
        + struct.pack("<Q", 1)  # id
        + struct.pack("<Q", 0)  # id2
        + b"\xff\xd8\xff"
        + b"\0"  # padding to 28
    )
    assert rec.read_bytes() == expected
    assert (tmp_path / "one.idx").read_text() == "1\t0\n"


# --------------------------------------------------------------------------- writer / reader


def test_round_trip_random_lengths_sequential_and_random_access(tmp_path: Path) -> None:
    rng = random.Random(1234)
    payloads = [rng.randbytes(rng.randrange(0, 300)) for _ in range(500)]
    assert any(len(p) % 4 for p in payloads) and any(len(p) % 4 == 0 for p in payloads)
    rec = tmp_path / "data.rec"
    _write(rec, payloads)

    with RecordReader(rec) as reader:
        assert len(reader) == 500
        assert reader.keys == list(range(500))
        assert list(reader) == payloads
        order = list(range(500))
        rng.shuffle(order)
        for key in order:
            assert reader.read(key) == payloads[key]
    assert all(offset % 4 == 0 for offset, _, _ in _parts_on_disk(rec))


def test_explicit_keys_and_idx_offsets(tmp_path: Path) -> None:
    rec, idx = tmp_path / "a.rec", tmp_path / "custom.idx"
    with RecordWriter(rec, idx) as writer:
        writer.write(b"first", key=10)
        writer.write(b"second", key=3)
        with pytest.raises(ValueError, match="duplicate"):
            writer.write(b"again", key=10)
    assert idx.read_text() == "10\t0\n3\t16\n"  # 8 + 5 -> padded to 16
    with RecordReader(rec, idx) as reader:
        assert reader.keys == [10, 3]
        assert reader.read(3) == b"second"
        with pytest.raises(KeyError):
            reader.read(4)


def test_reader_without_idx_uses_record_ordinals(tmp_path: Path) -> None:
    rec = tmp_path / "noidx.rec"
    _write(rec, [b"a", b"bb" + MAGIC_BYTES + b"cc", b"ccc"])
    (tmp_path / "noidx.idx").unlink()
    with RecordReader(rec) as reader:
        assert reader.keys == [0, 1, 2]
        assert reader.read(2) == b"ccc"


@pytest.mark.parametrize(
    ("payload", "cflags"),
    [
        (b"abcd" + MAGIC_BYTES + b"efg", [1, 3]),
        (MAGIC_BYTES + b"abcd" + MAGIC_BYTES + MAGIC_BYTES + b"xy", [1, 2, 2, 3]),
        (b"abcd" + MAGIC_BYTES, [1, 3]),
        (b"ab" + MAGIC_BYTES + b"cd", [0]),  # unaligned magic is plain data
    ],
)
def test_magic_inside_payload_is_split_into_parts(
    tmp_path: Path, payload: bytes, cflags: list[int]
) -> None:
    rec = tmp_path / "m.rec"
    _write(rec, [b"before", payload, b"after"])
    parts = _parts_on_disk(rec)
    assert [c for _, c, _ in parts] == [0, *cflags, 0]
    lengths = [length for _, _, length in parts[1:-1]]
    assert sum(lengths) + 4 * (len(lengths) - 1) == len(payload)  # magic dropped from pieces
    with RecordReader(rec) as reader:
        assert list(reader) == [b"before", payload, b"after"]
        assert reader.read(1) == payload
        assert reader.read(2) == b"after"


def test_multipart_part_layout_is_exact(tmp_path: Path) -> None:
    rec = tmp_path / "x.rec"
    _write(rec, [b"abcd" + MAGIC_BYTES + b"efg"])
    expected = (
        MAGIC_BYTES
        + struct.pack("<I", 1 << 29 | 4)
        + b"abcd"
        + MAGIC_BYTES
        + struct.pack("<I", 3 << 29 | 3)
        + b"efg\0"
    )
    assert rec.read_bytes() == expected


# --------------------------------------------------------------------------- corrupt input


def test_truncated_rec_names_file_and_offset(tmp_path: Path) -> None:
    rec = tmp_path / "t.rec"
    _write(rec, [b"x" * 40, b"y" * 40])  # records at offsets 0 and 48
    rec.write_bytes(rec.read_bytes()[:-10])
    with RecordReader(rec) as reader:
        assert reader.read(0) == b"x" * 40
        with pytest.raises(DataFormatError, match=r"t\.rec.*byte offset 48.*truncated"):
            reader.read(1)
        with pytest.raises(DataFormatError, match=r"t\.rec.*byte offset 48"):
            list(reader)


def test_truncated_header_names_offset(tmp_path: Path) -> None:
    rec = tmp_path / "h.rec"
    _write(rec, [b"x" * 8])
    rec.write_bytes(rec.read_bytes() + MAGIC_BYTES[:3])
    (tmp_path / "h.idx").unlink()
    with pytest.raises(DataFormatError, match=r"h\.rec.*byte offset 16.*header"):
        RecordReader(rec)


def test_bad_magic_names_file_and_offset(tmp_path: Path) -> None:
    rec = tmp_path / "b.rec"
    _write(rec, [b"x" * 12, b"y" * 12])  # second record at offset 20
    raw = bytearray(rec.read_bytes())
    raw[20:24] = b"JUNK"
    rec.write_bytes(bytes(raw))
    with RecordReader(rec) as reader:
        with pytest.raises(DataFormatError, match=r"b\.rec.*byte offset 20.*bad magic"):
            reader.read(1)
        with pytest.raises(DataFormatError, match=r"b\.rec.*byte offset 20"):
            list(reader)


def test_idx_offset_past_eof(tmp_path: Path) -> None:
    rec = tmp_path / "p.rec"
    _write(rec, [b"abc", b"def"])
    (tmp_path / "p.idx").write_text("0\t0\n1\t9999\n")
    with pytest.raises(DataFormatError, match=r"p\.idx.*line 2.*9999.*p\.rec"):
        RecordReader(rec)


@pytest.mark.parametrize("line", ["1 2 3", "one\t0", "5", "1\tx"])
def test_malformed_idx_line_names_line_number(tmp_path: Path, line: str) -> None:
    rec = tmp_path / "q.rec"
    _write(rec, [b"abc", b"def"])
    (tmp_path / "q.idx").write_text(f"0\t0\n{line}\n")
    with pytest.raises(DataFormatError, match=r"q\.idx.*line 2"):
        RecordReader(rec)


def test_bad_cflag_sequence(tmp_path: Path) -> None:
    rec = tmp_path / "c.rec"
    start = MAGIC_BYTES + struct.pack("<I", 1 << 29 | 4) + b"abcd"
    full = MAGIC_BYTES + struct.pack("<I", 0 << 29 | 4) + b"efgh"
    rec.write_bytes(start + full)
    (tmp_path / "c.idx").write_text("0\t0\n1\t12\n")
    with RecordReader(rec) as reader:
        assert reader.read(1) == b"efgh"
        with pytest.raises(DataFormatError, match=r"c\.rec.*byte offset 12.*cflag 0"):
            reader.read(0)
    end_first = MAGIC_BYTES + struct.pack("<I", 3 << 29 | 4) + b"abcd"
    rec.write_bytes(end_first)
    (tmp_path / "c.idx").write_text("0\t0\n")
    with RecordReader(rec) as reader, pytest.raises(DataFormatError, match="byte offset 0"):
        reader.read(0)


# --------------------------------------------------------------------------- atomic writes


def test_exception_inside_with_leaves_no_files(tmp_path: Path) -> None:
    rec = tmp_path / "out.rec"
    with pytest.raises(RuntimeError), RecordWriter(rec) as writer:
        writer.write(b"data")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_files_appear_only_on_close(tmp_path: Path) -> None:
    rec = tmp_path / "out.rec"
    writer = RecordWriter(rec)
    writer.write(b"data")
    assert not rec.exists() and not (tmp_path / "out.idx").exists()
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.idx", "out.rec"]


# --------------------------------------------------------------------------- insightface layout


def _samples(counts: list[int]) -> list[tuple[int, bytes]]:
    return [
        (label, b"\xff\xd8" + bytes([label, i]) * (i + 1))
        for label, n in enumerate(counts)
        for i in range(n)
    ]


def test_write_face_dataset_layout(tmp_path: Path) -> None:
    samples = _samples([3, 1, 2])
    assert write_face_dataset(tmp_path, samples, image_size=(112, 96)) == (6, 3)
    assert (tmp_path / "property").read_text().strip() == "3,112,96"

    with RecordReader(tmp_path / "train.rec", tmp_path / "train.idx") as reader:
        assert reader.keys[0] == 0 and reader.offset(0) == 0  # header0 is physically first
        header0, data0 = unpack(reader.read(0))
        assert header0.flag == 2 and tuple(header0.label) == (7.0, 10.0) and data0 == b""
        assert sorted(reader.keys) == list(range(10))
        ranges = [tuple(unpack(reader.read(k))[0].label) for k in range(7, 10)]
        assert ranges == [(1.0, 4.0), (4.0, 5.0), (5.0, 7.0)]
        for key, (label, jpeg) in enumerate(samples, start=1):
            header, data = unpack(reader.read(key))
            assert (header.flag, header.label, header.id, data) == (0, float(label), key, jpeg)


def test_face_index_and_dataset_read_labels(tmp_path: Path) -> None:
    samples = _samples([2, 3, 1, 4])
    write_face_dataset(tmp_path, samples)
    num_classes, keys, labels = read_face_dataset_index(tmp_path)
    assert num_classes == 4
    assert keys.tolist() == list(range(1, 11))
    assert labels.tolist() == [label for label, _ in samples]
    with FaceRecordDataset(tmp_path) as ds:
        assert len(ds) == 10 and ds.num_classes == 4
        assert [ds[i] for i in range(len(ds))] == samples


def test_face_dataset_without_header0(tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    labels = [0, 0, 1, 2, 2]
    with RecordWriter(rec) as writer:
        for key, label in enumerate(labels):
            writer.write(pack(IRHeader(0, float(label), key, 0), b"img%d" % key))
    num_classes, keys, got = read_face_dataset_index(tmp_path)
    assert keys.tolist() == [0, 1, 2, 3, 4]  # record 0 is an image, as in MXFaceDataset
    assert got.tolist() == labels
    assert num_classes == 3  # no property, no header0: max label + 1
    with FaceRecordDataset(tmp_path) as ds:
        assert ds[0] == (0, b"img0") and ds[4] == (2, b"img4")


def test_face_index_reads_array_and_multipart_labels(tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    with RecordWriter(rec) as writer:
        writer.write(pack(IRHeader(0, 1.0, 0, 0), b"c"))
        writer.write(pack(IRHeader(0, (4.0, 1.0), 1, 0), b"a"))  # array label: first counts
        writer.write(pack(IRHeader(0, 2.0, 2, 0), MAGIC_BYTES * 3))  # multi-part record
    assert [c for _, c, _ in _parts_on_disk(rec)] == [0, 0, 1, 2, 2, 3]
    assert read_face_dataset_index(tmp_path)[2].tolist() == [1, 4, 2]


def test_header0_with_bad_range_is_rejected(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "train.rec") as writer:
        writer.write(pack(IRHeader(0, (4.0, 1.0), 0, 0)))
    with pytest.raises(DataFormatError, match=r"train\.rec.*byte offset 0.*header0"):
        read_face_dataset_index(tmp_path)


def test_property_must_agree_with_header0(tmp_path: Path) -> None:
    write_face_dataset(tmp_path, _samples([1, 1]))
    assert read_face_dataset_index(tmp_path)[0] == 2
    (tmp_path / "property").write_text("85742,112,112\n")
    with pytest.raises(DataFormatError, match=r"85742 classes, but header0 of .* lists 2"):
        read_face_dataset_index(tmp_path)


@pytest.mark.parametrize(
    "labels", [[1, 1], [0, 2], [0, 1, 0], []], ids=["no-zero", "gap", "regroup", "empty"]
)
def test_write_face_dataset_rejects_unsorted_labels(tmp_path: Path, labels: list[int]) -> None:
    with pytest.raises(ValueError):
        write_face_dataset(tmp_path, [(label, b"\xff\xd8") for label in labels])
    assert not any(tmp_path.iterdir())  # atomic: nothing left behind


def test_write_face_dataset_checks_num_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        write_face_dataset(tmp_path, _samples([1, 1]), num_classes=3)


def test_missing_image_key_is_reported(tmp_path: Path) -> None:
    write_face_dataset(tmp_path, _samples([2, 2]))
    idx = tmp_path / "train.idx"
    idx.write_text("".join(line for line in idx.read_text().splitlines(True) if line[0] != "3"))
    with pytest.raises(DataFormatError, match=r"train\.idx.*image key 3"):
        read_face_dataset_index(tmp_path)


def test_labels_are_float32_exact(tmp_path: Path) -> None:
    write_face_dataset(tmp_path, _samples([1] * 40))
    _, _, labels = read_face_dataset_index(tmp_path)
    np.testing.assert_array_equal(labels, np.arange(40))
