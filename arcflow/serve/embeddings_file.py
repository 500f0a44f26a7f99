"""The embeddings file: face embeddings with their image, face and identity, on disk.

An embeddings "file" is a **directory** of plain ``.npy`` arrays plus ``meta.json``::

    gallery.emb/
      meta.json            {"format": "arcflow-embeddings", "version": 1, "count": N, "dim": D,
                            "model": "<model reference>", "optional": ["box", "score"]}
      embeddings.npy       <f4 (N, D)   unit-length rows (|norm - 1| <= NORM_TOLERANCE)
      image.npy            <U  (N,)     source image name or path, non-empty
      face.npy             <i4 (N,)     face index within its image, >= 0
      identity.npy         <i4 (N,)     row -> index into identity_names.npy
      identity_names.npy   <U  (K,)     identities, sorted and unique ("" = no identity)
      box.npy              <f4 (N, 4)   optional: x1, y1, x2, y2 in image pixels
      score.npy            <f4 (N,)     optional: detector score

Why not one ``.npz``: members of a zip cannot be memory-mapped, so a 1M x 512 gallery (2 GB)
would have to be read into memory whole. A bare ``.npy`` maps straight from the page cache, so
search scans it chunk by chunk within its memory budget, and only the pages of the rows it
reports are touched in ``image.npy``. Identities are stored once each (``identity_names``) and
per row as an int32 index: search groups by the index without sorting a million strings.

Every file is treated as hostile: ``.npy`` headers are parsed without unpickling, dtypes and
shapes must be exactly the documented ones, and each array's size must equal its file's size
before anything is mapped or read. Values are then checked (finite, unit rows, indices in
range) in chunks of bounded memory. Any violation raises one :class:`DataFormatError` naming
the file and the field. Writing goes through :func:`arcflow.atomic.atomic_dir`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from arcflow.atomic import atomic_dir
from arcflow.errors import DataFormatError

FORMAT = "arcflow-embeddings"
VERSION = 1
NORM_TOLERANCE = 1e-3  # |row norm - 1| allowed; float32 normalisation is ~1e-7 off
META = "meta.json"
OPTIONAL = ("box", "score")
MAX_META_BYTES = 1 << 20
MAX_MODEL_CHARS = 4096
CHECK_BYTES = 64 << 20  # memory for one chunk of the value checks
_HINT = "re-create it with `arcflow embed` (format: arcflow/serve/embeddings_file.py)"


@dataclass(frozen=True)
class EmbeddingsFile:
    """A validated embeddings directory; ``embeddings`` and ``image`` are memory maps when read
    with ``mmap=True`` (the small per-row arrays are always in memory)."""

    path: Path
    embeddings: np.ndarray  # (N, D) float32, unit rows
    image: np.ndarray  # (N,) str
    face: np.ndarray  # (N,) int32
    identity_index: np.ndarray  # (N,) int32 into identity_names
    identity_names: np.ndarray  # (K,) str, sorted, unique
    box: np.ndarray | None  # (N, 4) float32
    score: np.ndarray | None  # (N,) float32
    model: str
    version: int = VERSION

    @property
    def count(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def identity(self) -> np.ndarray:
        """Each row's identity as a string array (N,); materialised on each call."""
        return self.identity_names[self.identity_index]


def write_embeddings(
    path: str | Path,
    embeddings: np.ndarray,
    *,
    image: Sequence[str] | np.ndarray,
    face: Sequence[int] | np.ndarray,
    model: str,
    identity: Sequence[str] | np.ndarray | None = None,
    box: np.ndarray | None = None,
    score: np.ndarray | None = None,
) -> Path:
    """Write an embeddings directory at ``path`` atomically (replacing an earlier one).

    ``embeddings`` must already be unit rows (any float dtype; stored as float32);
    ``identity`` defaults to "" for every row. The data are checked with the reader's rules,
    so what is written always reads back. A ``path`` holding anything but an embeddings
    directory (or an empty one) is never replaced.
    """
    path = Path(path)
    where = f"{path} (writing)"
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[1] < 1 or emb.dtype.kind != "f":
        raise DataFormatError(
            f"{where}: embeddings must be a float (N, D >= 1) array, got {emb.dtype} {emb.shape}"
        )
    emb = np.ascontiguousarray(emb, dtype="<f4")
    n = len(emb)
    check_unit_rows(emb, f"{where}: embeddings", hint="normalise the rows before writing")
    columns = {
        "embeddings": emb,
        "image": _strings(image, n, where, "image"),
        "face": _ints(face, n, where, "face"),
    }
    if not (columns["image"] != "").all():
        raise DataFormatError(f"{where}: image: every row needs a non-empty image name")
    if (columns["face"] < 0).any():
        raise DataFormatError(f"{where}: face: face indices must be >= 0")
    labels = _strings([""] * n if identity is None else identity, n, where, "identity")
    names, index = np.unique(labels, return_inverse=True)
    columns["identity"] = index.reshape(n).astype("<i4")
    columns["identity_names"] = names.astype(f"<U{max(1, names.dtype.itemsize // 4)}")
    optional = []
    for field, value, shape in (("box", box, (n, 4)), ("score", score, (n,))):
        if value is None:
            continue
        value = np.asarray(value)
        if value.shape != shape or value.dtype.kind not in "fiu":
            raise DataFormatError(f"{where}: {field} must be a {shape} number array")
        columns[field] = np.ascontiguousarray(value, dtype="<f4")
        _check_finite(columns[field], f"{where}: {field}")
        optional.append(field)
    if not isinstance(model, str) or len(model) > MAX_MODEL_CHARS:
        raise DataFormatError(f"{where}: model must be a string of <= {MAX_MODEL_CHARS} chars")
    _refuse_foreign(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "count": n,
        "dim": int(emb.shape[1]),
        "model": model,
        "optional": optional,
    }
    with atomic_dir(path) as tmp:
        for field, array in columns.items():
            with open(tmp / f"{field}.npy", "wb") as f:
                np.save(f, array, allow_pickle=False)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_embeddings(path: str | Path, *, mmap: bool = True) -> EmbeddingsFile:
    """Read and validate the embeddings directory at ``path``.

    With ``mmap`` the embeddings and image names stay on disk (read-only maps); the value
    checks still scan every row once, in chunks of :data:`CHECK_BYTES`.
    """
    path = Path(path)
    meta = _read_meta(path)
    n, d = meta["count"], meta["dim"]
    emb = _read_npy(path, "embeddings", np.dtype("<f4"), (n, d), mmap)
    image = _read_npy(path, "image", None, (n,), mmap)
    face = _read_npy(path, "face", np.dtype("<i4"), (n,), False)
    index = _read_npy(path, "identity", np.dtype("<i4"), (n,), False)
    names = _read_npy(path, "identity_names", None, None, False)
    check_unit_rows(emb, f"{path / 'embeddings.npy'}: embeddings")
    if not (image != "").all():
        row = int(np.flatnonzero(image == "")[0])
        raise DataFormatError(f"{path / 'image.npy'}: image: row {row} is empty", hint=_HINT)
    if (face < 0).any():
        row = int(np.flatnonzero(face < 0)[0])
        raise DataFormatError(f"{path / 'face.npy'}: face: row {row} is negative", hint=_HINT)
    if n and (index.min() < 0 or index.max() >= len(names)):
        raise DataFormatError(
            f"{path / 'identity.npy'}: identity: indices must be in [0, {len(names)})",
            hint=_HINT,
        )
    if len(names) > 1 and not (names[1:] > names[:-1]).all():
        raise DataFormatError(
            f"{path / 'identity_names.npy'}: identity_names: not sorted and unique", hint=_HINT
        )
    extra: dict[str, np.ndarray | None] = dict.fromkeys(OPTIONAL)
    for field, shape in (("box", (n, 4)), ("score", (n,))):
        if field in meta["optional"]:
            extra[field] = _read_npy(path, field, np.dtype("<f4"), shape, False)
            _check_finite(extra[field], f"{path / (field + '.npy')}: {field}")
    return EmbeddingsFile(
        path, emb, image, face, index, names, extra["box"], extra["score"], meta["model"]
    )


def check_unit_rows(emb: np.ndarray, where: str, *, hint: str = _HINT) -> None:
    """DataFormatError naming the first row of ``emb`` that is not finite or not unit length."""
    if emb.size == 0:
        return
    rows = max(1, CHECK_BYTES // (emb.shape[1] * 4))
    for start in range(0, len(emb), rows):
        block = emb[start : start + rows]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = np.flatnonzero(~(np.abs(norms - 1) <= NORM_TOLERANCE))
        if bad.size:
            row = start + int(bad[0])
            what = (
                "has a NaN or infinite value"
                if not np.isfinite(emb[row]).all()
                else f"has norm {float(norms[bad[0]]):.6g}, not 1 within {NORM_TOLERANCE}"
            )
            raise DataFormatError(f"{where}: row {row} {what}", hint=hint)


def _check_finite(array: np.ndarray, where: str) -> None:
    finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataFormatError(f"{where}: row {row} has a NaN or infinite value", hint=_HINT)


def _strings(values: Sequence[str] | np.ndarray, n: int, where: str, field: str) -> np.ndarray:
    array = np.asarray(values)
    if n == 0 and array.shape == (0,):
        return np.empty(0, "<U1")
    if array.dtype.kind not in "UO" or array.shape != (n,):
        raise DataFormatError(
            f"{where}: {field} must be {n} strings, got {array.dtype} {array.shape}"
        )
    if array.dtype.kind == "O" and not all(isinstance(v, str) for v in array):
        raise DataFormatError(f"{where}: {field} must hold only str values")
    array = array.astype(str)
    return array.astype(f"<U{max(1, array.dtype.itemsize // 4)}")


def _ints(values: Sequence[int] | np.ndarray, n: int, where: str, field: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size == 0:
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or array.shape != (n,):
        raise DataFormatError(
            f"{where}: {field} must be {n} integers, got {array.dtype} {array.shape}"
        )
    if array.size and int(array.max()) > np.iinfo(np.int32).max:
        raise DataFormatError(f"{where}: {field} values must fit in int32")
    return array.astype("<i4")


def _refuse_foreign(path: Path) -> None:
    """Refuse to replace anything but an earlier embeddings directory or an empty one."""
    if not path.exists() and not path.is_symlink():
        return
    if (
        path.is_dir()
        and not path.is_symlink()
        and ((path / META).is_file() or not any(path.iterdir()))
    ):
        return
    raise DataFormatError(
        f"{path}: exists and is not an embeddings directory; refusing to replace it",
        hint="write to a new path, or remove it first",
    )


def _read_meta(path: Path) -> dict:
    meta_path = path / META
    if not path.is_dir():
        what = "a file" if path.exists() else "missing"
        raise DataFormatError(f"{path}: not an embeddings directory ({what})", hint=_HINT)
    try:
        with open(meta_path, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
    except OSError as exc:
        raise DataFormatError(f"{meta_path}: cannot read: {exc.strerror}", hint=_HINT) from None
    if len(raw) > MAX_META_BYTES:
        raise DataFormatError(f"{meta_path}: larger than {MAX_META_BYTES} bytes", hint=_HINT)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{meta_path}: not valid JSON: {exc}", hint=_HINT) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataFormatError(f'{meta_path}: format: expected "{FORMAT}"', hint=_HINT)
    version = meta.get("version")
    if type(version) is not int or version != VERSION:
        raise DataFormatError(
            f"{meta_path}: version: {version!r} is not supported (this ArcFlow reads {VERSION})",
            hint="read it with the ArcFlow that wrote it, or re-embed",
        )
    for key, low in (("count", 0), ("dim", 1)):
        if type(meta.get(key)) is not int or meta[key] < low:
            raise DataFormatError(f"{meta_path}: {key}: expected an integer >= {low}", hint=_HINT)
    model = meta.get("model")
    if not isinstance(model, str) or len(model) > MAX_MODEL_CHARS:
        raise DataFormatError(f"{meta_path}: model: expected a string", hint=_HINT)
    optional = meta.get("optional", [])
    if not isinstance(optional, list) or not set(optional) <= set(OPTIONAL):
        raise DataFormatError(f"{meta_path}: optional: expected a subset of {OPTIONAL}", hint=_HINT)
    return meta


def _read_npy(
    root: Path,
    field: str,
    dtype: np.dtype | None,
    shape: tuple[int, ...] | None,
    mmap: bool,
) -> np.ndarray:
    """One ``.npy`` of the directory, checked before any byte of data is mapped or read.

    ``dtype`` is an exact dtype or None (little-endian unicode of any width); ``shape`` None
    means any 1-D length.
    """
    file = root / f"{field}.npy"

    def bad(what: str) -> DataFormatError:
        return DataFormatError(f"{file}: {field}: {what}", hint=_HINT)

    try:
        with open(file, "rb") as f:
            actual_shape, actual, nbytes = _npy_header(f, dtype, shape, bad)
            if nbytes == 0:
                return np.zeros(actual_shape, actual)
            if mmap:
                return np.memmap(f, dtype=actual, mode="r", offset=f.tell(), shape=actual_shape)
            data = np.fromfile(f, dtype=actual, count=nbytes // actual.itemsize)
    except OSError as exc:
        raise bad(f"cannot read: {exc.strerror}") from None
    if data.nbytes != nbytes:
        raise bad("file changed while it was read")
    return data.reshape(actual_shape)


def _npy_header(
    f: BinaryIO,
    dtype: np.dtype | None,
    shape: tuple[int, ...] | None,
    bad: Callable[[str], DataFormatError],
) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data bytes) of the open ``.npy`` ``f``, left at its data; every field
    checked against the expected ones and the data size against the file's size."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy version {version} is not supported")
    except (ValueError, SyntaxError) as exc:
        raise bad(f"not a valid .npy header ({' '.join(str(exc).split())[:200]})") from None
    actual_shape, fortran, actual = header
    if actual.hasobject:
        raise bad(f"dtype {actual} holds Python objects; refused (never unpickled)")
    if dtype is None:
        if actual.kind != "U" or actual.str[0] != "<" or actual.itemsize == 0:
            raise bad(f"dtype {actual.str} is not little-endian unicode text")
    elif actual.str != dtype.str or actual.fields is not None or actual.shape:
        raise bad(f"dtype {actual.str}, expected {dtype.str}")
    if fortran:
        raise bad("Fortran order; expected C order")
    actual_shape = tuple(actual_shape)
    if shape is None and len(actual_shape) != 1:
        raise bad(f"shape {actual_shape}, expected 1-D")
    if shape is not None and actual_shape != shape:
        raise bad(f"shape {actual_shape}, expected {shape} (from meta.json)")
    nbytes = int(np.prod(actual_shape, dtype=object)) * actual.itemsize
    size = os.fstat(f.fileno()).st_size - f.tell()
    if size != nbytes:
        raise bad(f"{size} data bytes, expected {nbytes} (truncated or padded)")
    return actual_shape, actual, nbytes
