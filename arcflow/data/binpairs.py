"""insightface verification pair sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A .bin file is a pickle of ``(bins, issame_list)``: ``bins`` holds 2N encoded images
(pair ``i`` is ``bins[2i]``, ``bins[2i+1]``) as bytes or uint8 arrays, ``issame_list``
holds N bools. Loading uses a restricted unpickler that admits only the handful of
callables this format needs; anything else raises :class:`UnsafePickleError` before it
can run. Those callables are checked too, so a pickle of a few bytes cannot allocate
gigabytes (``bytes(n)``, an array built with a shape instead of from data), and the decoded
images may not outweigh the file (one array referenced a million times).
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcflow.errors import DataFormatError, UnsafePickleError

PathLike = str | os.PathLike[str]
#: The decoded images of a .bin may weigh at most this many times the file. A file written with
#: one bytes object per image slot decodes to about its size; a writer that reuses the object
#: of an image shown in several pairs (pickle stores it once) to a few times it (10x seen in
#: small sets); a bomb referencing one array thousands of times, to thousands of times it.
DECODE_FACTOR = 64


@dataclass
class PairSet:
    """Encoded images (2 per pair) and the same-identity flag of each pair."""

    images: list[bytes]
    issame: np.ndarray  # bool, shape (N,)

    def __len__(self) -> int:
        return len(self.issame)

    def pair(self, i: int) -> tuple[bytes, bytes, bool]:
        """``(image_a, image_b, issame)`` of pair ``i``."""
        return self.images[2 * i], self.images[2 * i + 1], bool(self.issame[i])


# --------------------------------------------------------------------------- unpickling


def _numpy_attr(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy 2) or ``numpy.core.<...>`` (numpy 1)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` as protocol-2 pickles use it for bytes."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(
            f"_codecs.encode called with {type(text).__name__}, {encoding!r}"
        )
    return text.encode("latin1")


class _NdarrayType:
    """What a pickle gets for ``numpy.ndarray``: only :func:`_reconstruct` takes it; calling
    it (an array of any shape, uninitialised, from a few bytes of pickle) is refused."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("numpy.ndarray called directly (arrays come from data)")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` as numpy pickles use it: an empty ndarray, filled from the
    pickle's data by its ``__setstate__``; any other shape would allocate from nothing."""
    if subtype is not _NdarrayType or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"_reconstruct({subtype!r}, {shape!r}) is not numpy's")
    return _numpy_attr("multiarray", "_reconstruct")(np.ndarray, (0,), dtype)


def _from_data(kind: type) -> Callable[..., Any]:
    """``bytes``/``bytearray`` from data only: ``bytes(10**10)`` would allocate from nothing."""

    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"{kind.__name__}({args[0]}) allocates from nothing")
        return kind(*args)

    return build


def _allowed() -> dict[tuple[str, str], Callable[..., Any]]:
    """The callables the .bin format needs, by every name a pickle may use for them."""
    numpy_objects = {
        ("multiarray", "_reconstruct"): _reconstruct,
        ("multiarray", "scalar"): _numpy_attr("multiarray", "scalar"),
        ("numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    }
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for (sub, name), obj in numpy_objects.items():
        allowed[(f"numpy.core.{sub}", name)] = obj
        allowed[(f"numpy._core.{sub}", name)] = obj
    builtins: list[Callable[..., Any]] = [bool, int, float, list, tuple, set, frozenset]
    for name, builtin in [
        *((b.__name__, b) for b in builtins),  # type: ignore[attr-defined]
        ("bytes", _from_data(bytes)),
        ("bytearray", _from_data(bytearray)),
    ]:
        allowed[("builtins", name)] = builtin
        allowed[("__builtin__", name)] = builtin  # Python 2 name
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` hands out only allow-listed callables."""

    def __init__(self, file: io.BufferedIOBase, *, encoding: str, source: Path) -> None:
        super().__init__(file, encoding=encoding)
        self._source = source
        self._allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load {module}.{name} (not part of the .bin format)",
                hint="only trusted .bin pair sets can be loaded; this file asks for code",
            ) from None


def _unpickle(path: Path, data: bytes, encoding: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding, source=path).load()
    except (UnsafePickleError, UnicodeDecodeError):
        raise
    except Exception as e:  # pickle raises many types on corrupt input
        raise DataFormatError(f"{path}: not a valid .bin pickle ({type(e).__name__}: {e})") from e


def _load_any(path: Path) -> Any:
    """Unpickle with the default encoding; retry with ``encoding='bytes'`` for Python 2 files."""
    data = path.read_bytes()
    try:
        return _unpickle(path, data, "ASCII")
    except UnicodeDecodeError:
        pass
    try:
        return _unpickle(path, data, "bytes")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: byte offset {e.start}: undecodable string") from e


# --------------------------------------------------------------------------- validation


def _as_image_bytes(path: Path, index: int, item: Any) -> bytes:
    """One encoded image as bytes; bytes-likes and uint8 arrays (1-D or N x 1) are accepted."""
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
    elif (
        isinstance(item, np.ndarray)
        and item.dtype == np.uint8
        and (item.ndim == 1 or (item.ndim == 2 and item.shape[1] == 1))
    ):
        data = item.tobytes()
    else:
        kind = f"{item.dtype} array {item.shape}" if isinstance(item, np.ndarray) else type(item)
        raise DataFormatError(f"{path}: image {index}: expected encoded bytes, got {kind}")
    if not data:
        raise DataFormatError(f"{path}: image {index}: empty")
    return data


def _as_issame(path: Path, raw: Any) -> np.ndarray:
    """``issame_list`` as a 1-D bool array (bools, or integers that are all 0/1)."""
    try:
        arr = np.asarray(raw)
    except Exception as e:
        raise DataFormatError(f"{path}: issame list is not an array of bools ({e})") from e
    if arr.ndim != 1:
        raise DataFormatError(f"{path}: issame list has shape {arr.shape}, expected (N,)")
    if arr.dtype == np.bool_:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.integer):
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if not len(bad):
            return arr.astype(bool)
        raise DataFormatError(f"{path}: issame {int(bad[0])}: value {arr[bad[0]]} is not a bool")
    raise DataFormatError(f"{path}: issame list has dtype {arr.dtype}, expected bool")


def _image_size(item: Any) -> int:
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    return len(item) if isinstance(item, bytes | bytearray | memoryview) else 0


def _validate(path: Path, obj: Any, budget: int | None = None) -> PairSet:
    """The pair set in ``obj``; with ``budget``, its images may total at most that many bytes
    (checked before any is copied)."""
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise DataFormatError(f"{path}: expected a (bins, issame_list) 2-tuple")
    bins, raw_issame = obj
    if not isinstance(bins, list | tuple):
        raise DataFormatError(f"{path}: bins is a {type(bins).__name__}, expected a list")
    issame = _as_issame(path, raw_issame)
    expected = 2 * len(issame)
    if len(bins) > expected:
        raise DataFormatError(
            f"{path}: image {expected}: beyond the {len(issame)} pairs of issame_list "
            f"({len(bins)} images, expected {expected})"
        )
    if len(bins) < expected:
        raise DataFormatError(
            f"{path}: pair {len(bins) // 2}: image {len(bins)} is missing "
            f"({len(bins)} images, expected {expected})"
        )
    if budget is not None:
        total = sum(_image_size(item) for item in bins)
        if total > budget:
            raise DataFormatError(
                f"{path}: its images decode to {total:,} bytes, more than the file's "
                f"{DECODE_FACTOR} x its size allows ({budget:,}): refused"
            )
    images = [_as_image_bytes(path, i, item) for i, item in enumerate(bins)]
    return PairSet(images=images, issame=issame)


# --------------------------------------------------------------------------- public API


def load_bin(path: PathLike) -> PairSet:
    """Load and validate an insightface .bin pair set without running foreign code."""
    path = Path(path)
    size = path.stat().st_size
    return _validate(path, _load_any(path), budget=DECODE_FACTOR * size + 4096)


def save_bin(path: PathLike, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write ``(images, issame)`` as a .bin (protocol 4) atomically."""
    path = Path(path)
    flags = [bool(x) for x in issame]
    pair_set = _validate(path, (list(images), np.asarray(flags, dtype=bool)))
    payload = pickle.dumps((pair_set.images, flags), protocol=4)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
