"""Attack: .bin pair sets of a few hundred bytes built to allocate gigabytes while unpickling
(``bytes(n)``, an ndarray called with a shape, numpy's ``_reconstruct`` with a shape) or while
decoding (one array referenced thousands of times). Each is one clear error, early."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from arcflow.data.binpairs import load_bin, save_bin
from arcflow.errors import DataFormatError

pytestmark = [pytest.mark.attack, pytest.mark.unit]

HUGE = 1 << 40  # a terabyte: any attempt to honour it fails the test run, not just the test


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _reconstruct() -> object:
    from numpy._core.multiarray import _reconstruct

    return _reconstruct


BOMBS = {  # name -> (the object, what the refusal says: not a MemoryError from trying)
    "bytes(n)": (lambda: _Call(bytes, HUGE), "allocates from nothing"),
    "bytearray(n)": (lambda: _Call(bytearray, HUGE), "allocates from nothing"),
    "ndarray(shape)": (lambda: _Call(np.ndarray, (HUGE,)), "called directly"),
    "_reconstruct(shape)": (
        lambda: _Call(_reconstruct(), np.ndarray, (HUGE,), b"b"),
        "is not numpy's",
    ),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_allocation_bombs_are_refused_while_unpickling(bomb: str, tmp_path: Path) -> None:
    path = tmp_path / "lfw.bin"
    build, refusal = BOMBS[bomb]
    path.write_bytes(pickle.dumps(([build(), b"x"], [True]), protocol=2))
    assert path.stat().st_size < 300
    with pytest.raises(DataFormatError, match=r"not a valid \.bin pickle") as err:
        load_bin(path)
    assert refusal in str(err.value) and "\n" not in str(err.value)


def test_one_array_referenced_thousands_of_times_is_refused_before_copying(
    tmp_path: Path,
) -> None:
    image = np.frombuffer(b"\xff\xd8" + bytes(100_000), np.uint8)
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([image] * 4000, [True] * 2000), protocol=4))
    assert path.stat().st_size < 200_000  # decodes to 400 MB
    with pytest.raises(DataFormatError, match="decode to 400,008,000 bytes, more than"):
        load_bin(path)


def test_honest_files_of_every_pickle_flavour_still_load(tmp_path: Path) -> None:
    images = [b"\xff\xd8" + bytes([i]) * 50 for i in range(4)]
    save_bin(tmp_path / "ours.bin", images, [True, False])
    assert load_bin(tmp_path / "ours.bin").images == images
    as_arrays = [np.frombuffer(x, np.uint8) for x in images]
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.bin"
        path.write_bytes(pickle.dumps((as_arrays, [True, False]), protocol=protocol))
        assert load_bin(path).images == images, protocol
