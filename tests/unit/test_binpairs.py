"""insightface .bin pair sets: round trip, Python 2 pickles, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from arcflow.data.binpairs import PairSet, load_bin, save_bin
from arcflow.errors import DataFormatError, UnsafePickleError

pytestmark = pytest.mark.unit

IMAGES = [b"\xff\xd8\xff\xe0" + bytes([i]) * (i + 3) for i in range(6)]
ISSAME = [True, False, True]


def _assert_pairs(pairs: PairSet) -> None:
    assert pairs.images == IMAGES
    assert all(type(img) is bytes for img in pairs.images)
    assert pairs.issame.dtype == np.bool_
    assert pairs.issame.tolist() == ISSAME
    assert len(pairs) == 3
    assert pairs.pair(1) == (IMAGES[2], IMAGES[3], False)


# --- Python 2 pickles, written opcode by opcode (protocol 2, str = SHORT_BINSTRING) ---


def _py2_str(data: bytes) -> bytes:
    assert len(data) < 256
    return b"U" + bytes([len(data)]) + data


def _py2_uint8_array(data: bytes) -> bytes:
    """What Python 2 + numpy wrote for ``np.frombuffer(data, np.uint8)``."""
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
    dtype_state = b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R(K\x01K"
        + bytes([len(data)])
        + b"\x85"
        + dtype
        + dtype_state
        + b"\x89"
        + _py2_str(data)
        + b"tb"
    )


def _py2_pickle(items: list[bytes], issame: list[bool]) -> bytes:
    flags = b"".join(b"\x88" if x else b"\x89" for x in issame)
    return b"\x80\x02](" + b"".join(items) + b"e](" + flags + b"e\x86."


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "lfw.bin"
    save_bin(path, IMAGES, ISSAME)
    _assert_pairs(load_bin(path))
    assert [p.name for p in tmp_path.iterdir()] == ["lfw.bin"]  # no temp file left


def test_saved_file_is_the_insightface_format(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    save_bin(path, IMAGES, np.array(ISSAME))
    bins, issame = pickle.loads(path.read_bytes())
    assert bins == IMAGES and issame == ISSAME


def test_protocol2_pickle_of_bytes_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "p2.bin"
    path.write_bytes(pickle.dumps((IMAGES, ISSAME), protocol=2))
    _assert_pairs(load_bin(path))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_uint8_items_and_bool_array(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "np.bin"
    items = [np.frombuffer(img, dtype=np.uint8) for img in IMAGES]
    path.write_bytes(pickle.dumps((items, np.array(ISSAME)), protocol=protocol))
    _assert_pairs(load_bin(path))


def test_cv2_style_column_arrays_and_numpy_bool_scalars(tmp_path: Path) -> None:
    path = tmp_path / "cv.bin"
    items = [np.frombuffer(img, dtype=np.uint8).reshape(-1, 1) for img in IMAGES]
    path.write_bytes(pickle.dumps((items, [np.bool_(x) for x in ISSAME]), protocol=2))
    _assert_pairs(load_bin(path))


def test_python2_pickle_of_str_items(tmp_path: Path) -> None:
    path = tmp_path / "py2.bin"
    path.write_bytes(_py2_pickle([_py2_str(img) for img in IMAGES], ISSAME))
    with pytest.raises(UnicodeDecodeError):  # proves the encoding fallback is exercised
        pickle.loads(path.read_bytes())
    _assert_pairs(load_bin(path))


def test_python2_pickle_of_numpy_items(tmp_path: Path) -> None:
    path = tmp_path / "py2np.bin"
    path.write_bytes(_py2_pickle([_py2_uint8_array(img) for img in IMAGES], ISSAME))
    _assert_pairs(load_bin(path))


# --- malicious pickles ---


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _CallsOpen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    ("evil", "refused"),
    [(_RunsShell, r"(posix|os|nt)\.system"), (_CallsOpen, r"(builtins|io)\.open")],
)
def test_malicious_pickle_is_refused_and_never_runs(
    tmp_path: Path, evil: type, refused: str
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([evil(marker), IMAGES[1]], [True]), protocol=2))
    with pytest.raises(UnsafePickleError, match=rf"evil\.bin.*{refused}"):
        load_bin(path)
    assert not marker.exists()


def test_evil_global_inside_numpy_like_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "sneaky.bin"
    evil = f"cos\nsystem\n(Vtouch {marker}\ntR".encode()
    path.write_bytes(_py2_pickle([_py2_str(IMAGES[0]), evil], [True]))
    with pytest.raises(UnsafePickleError, match=r"sneaky\.bin.*os\.system"):
        load_bin(path)
    assert not marker.exists()


# --- structural errors ---


def test_odd_number_of_images(tmp_path: Path) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps((IMAGES[:5], ISSAME), protocol=4))
    with pytest.raises(DataFormatError, match=r"odd\.bin.*image 5"):
        load_bin(path)


def test_too_many_images(tmp_path: Path) -> None:
    path = tmp_path / "many.bin"
    path.write_bytes(pickle.dumps((IMAGES, ISSAME[:2]), protocol=4))
    with pytest.raises(DataFormatError, match=r"many\.bin.*image 4"):
        load_bin(path)


@pytest.mark.parametrize(
    ("bad", "index"),
    [(np.zeros(5, dtype=np.float32), 3), (b"", 3), (12345, 3), (np.zeros((4, 4), np.uint8), 3)],
    ids=["float-array", "empty", "int", "2d-array"],
)
def test_bad_item_names_index(tmp_path: Path, bad: object, index: int) -> None:
    items: list[object] = list(IMAGES)
    items[index] = bad
    path = tmp_path / "item.bin"
    path.write_bytes(pickle.dumps((items, ISSAME), protocol=4))
    with pytest.raises(DataFormatError, match=rf"item\.bin.*image {index}"):
        load_bin(path)


@pytest.mark.parametrize(
    "obj",
    [(IMAGES,), (IMAGES, ISSAME, None), {"bins": IMAGES}, (IMAGES, [0.5, 1.0, 0.0])],
    ids=["1-tuple", "3-tuple", "dict", "float-issame"],
)
def test_bad_structure(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "shape.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(DataFormatError, match=r"shape\.bin"):
        load_bin(path)


def test_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\xff\xd8 this is a jpeg, not a pickle")
    with pytest.raises(DataFormatError, match=r"garbage\.bin"):
        load_bin(path)


def test_save_bin_validates_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.bin"
    with pytest.raises(DataFormatError, match="image 5"):
        save_bin(path, IMAGES[:5], ISSAME)
    assert list(tmp_path.iterdir()) == []
