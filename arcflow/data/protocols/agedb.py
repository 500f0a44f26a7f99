"""AgeDB-30: the protocol ``.mat`` and the 68-point ``.pts`` landmark files.

Release layout: ``03_Protocol_Images/<name>.jpg`` with ``<name>.pts`` beside it, and
``04_FINAL_protocol_30_years.mat`` (10 splits x 600 pairs: 300 same + 300 different, each
pair 30 years apart).

The ``.mat`` structure below is what the two public readers we found index into
(insightface ``src/data/agedb2pack2.py``, which packs ``agedb_30.bin``, and an independent
``.mat``-to-``pairs.txt`` converter); they agree, but the field *names* appear in neither
(both index fields by position), so the names are our choice and the reader never relies
on them::

    splits                 10x1 cell
      splits{k}            1x1 struct, fields by position:
        [0] pairs          2xN cell; column c is pair c, rows 0/1 its two images
              pairs{r,c}   1x1 struct: [0] name (char, file stem without ".jpg"),
                                       [1] age (double)
        [1] flag           1xN double: 1 = same identity, -1 = different

In scipy terms: ``splits[k][0][0][0]`` is split ``k``'s struct, ``[0]`` of that the pairs
cell, ``pairs[r][c][0][0]`` an image struct. insightface ignores ``flag`` and calls a pair
"same" when both names share the text before the first ``_`` (it also asserts at least 5
``_``-separated parts), so names we write follow that: identity first.

:func:`write_agedb_protocol` writes field names ``pairs``/``flag`` and ``name``/``age``,
uncompressed, with a fixed text header instead of scipy's timestamp, so equal protocols give
equal bytes (write, read, write is byte-exact; a real file reads into equal values, not
equal bytes). scipy is imported lazily inside the two ``.mat`` functions.

``.pts`` (iBUG format): ``version: 1``, ``n_points:  68`` (two spaces, as in the iBUG/300-W
files), ``{``, one ``x y`` line per point, ``}``. :func:`write_pts` writes that form with a
fixed number of decimals (6, as in the iBUG samples) and a final newline; a file in exactly
that form rewrites byte for byte, others read fine and are rewritten in it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcflow.atomic import atomic_file
from arcflow.data.protocols.text import read_text
from arcflow.errors import DataFormatError

PROTOCOL_FILE = "04_FINAL_protocol_30_years.mat"
IMAGE_DIR = "03_Protocol_Images"
SPLITS = 10
PAIRS_PER_SPLIT = 600
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by arcflow.data.protocols.agedb".ljust(116, b" ")


@dataclass(frozen=True)
class AgeDBImage:
    """One protocol image: file stem in ``03_Protocol_Images`` and the age in it."""

    name: str
    age: int


@dataclass(frozen=True)
class AgeDBPair:
    first: AgeDBImage
    second: AgeDBImage
    same: bool


@dataclass(frozen=True)
class AgeDBSplit:
    """One split's pairs in ``.mat`` column order."""

    pairs: tuple[AgeDBPair, ...]


def image_path(name: str) -> str:
    """Relative path of a protocol image; its landmarks are the same path with ``.pts``."""
    return f"{IMAGE_DIR}/{name}.jpg"


# --------------------------------------------------------------------------- .mat


def _image(cell: Any, where: str) -> AgeDBImage:
    try:
        record = cell[0][0]
        name = record[0][0]
        age = np.asarray(record[1])
        if not isinstance(name, str) or not name:
            raise ValueError(f"name is {name!r}, not a string")
        if age.size != 1 or not np.issubdtype(age.dtype, np.number):
            raise ValueError(f"age is {age!r}, not a number")
        age_value = float(age.reshape(-1)[0])
        if age_value != int(age_value):
            raise ValueError(f"age {age_value} is not a whole number")
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{where}: bad image struct ({exc})") from None
    return AgeDBImage(name, int(age_value))


def read_agedb_protocol(path: str | Path) -> tuple[AgeDBSplit, ...]:
    """Parse the protocol ``.mat``; a malformed entry raises DataFormatError naming split/pair."""
    from scipy.io import loadmat  # lazy: scipy is only needed for AgeDB's .mat

    path = Path(path)
    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: missing") from None
    except Exception as exc:  # scipy raises several unrelated types for a corrupt file
        raise DataFormatError(f"{path}: not a readable MATLAB file ({exc})") from None
    if "splits" not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(f"{path}: no 'splits' variable (has {names})")
    cells = mat["splits"]
    if cells.dtype != object or cells.ndim != 2 or cells.shape[1] != 1:
        raise DataFormatError(f"{path}: 'splits' must be an Nx1 cell, got {cells.shape}")
    splits = []
    for k in range(cells.shape[0]):
        where = f"{path}: split {k + 1}"
        try:
            record = cells[k, 0][0, 0]
            pairs, flags = record[0], np.asarray(record[1])
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{where}: not a struct of (pairs, flag) ({exc})") from None
        if pairs.ndim != 2 or pairs.shape[0] != 2:
            raise DataFormatError(f"{where}: pairs must be a 2xN cell, got {pairs.shape}")
        n = pairs.shape[1]
        if flags.size != n:
            raise DataFormatError(f"{where}: {flags.size} flags for {n} pairs")
        flags = flags.reshape(-1)
        split = []
        for c in range(n):
            pair_where = f"{where}, pair {c + 1}"
            if flags[c] not in (1, -1):
                raise DataFormatError(f"{pair_where}: flag {flags[c]!r} is not 1 or -1")
            first = _image(pairs[0, c], pair_where)
            second = _image(pairs[1, c], pair_where)
            split.append(AgeDBPair(first, second, bool(flags[c] == 1)))
        splits.append(AgeDBSplit(tuple(split)))
    return tuple(splits)


def _struct(**fields: Any) -> np.ndarray:
    """A 1x1 MATLAB struct (scipy: a (1, 1) structured array of object fields)."""
    value = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, item in fields.items():
        value[0, 0][name] = item
    return value


def write_agedb_protocol(path: str | Path, splits: Sequence[AgeDBSplit]) -> None:
    """Write the protocol ``.mat`` in the structure above, deterministically and atomically."""
    from scipy.io import savemat  # lazy: scipy is only needed for AgeDB's .mat

    cells = np.empty((len(splits), 1), dtype=object)
    for k, split in enumerate(splits):
        pairs = np.empty((2, len(split.pairs)), dtype=object)
        for c, pair in enumerate(split.pairs):
            for r, image in enumerate((pair.first, pair.second)):
                if not image.name:
                    raise ValueError(f"split {k + 1}, pair {c + 1}: empty image name")
                pairs[r, c] = _struct(name=image.name, age=np.array([[float(image.age)]]))
        flags = np.array([[1.0 if pair.same else -1.0 for pair in split.pairs]])
        cells[k, 0] = _struct(pairs=pairs, flag=flags.reshape(1, -1))
    buffer = io.BytesIO()
    savemat(buffer, {"splits": cells}, do_compression=False)
    data = bytearray(buffer.getvalue())
    data[: len(_MAT_HEADER)] = _MAT_HEADER  # scipy stamps the time here; keep bytes stable
    with atomic_file(path) as tmp:
        tmp.write_bytes(bytes(data))


# --------------------------------------------------------------------------- .pts


def read_pts(path: str | Path) -> np.ndarray:
    """Parse an iBUG ``.pts`` file into a float64 ``(n_points, 2)`` array of (x, y)."""
    path = Path(path)
    lines = read_text(path).splitlines()
    header: dict[str, str] = {}
    lineno = 0
    for lineno, line in enumerate(lines, start=1):
        if line.strip() == "{":
            break
        key, sep, value = line.partition(":")
        if not sep or key.strip() not in ("version", "n_points"):
            raise DataFormatError(f"{path}:{lineno}: expected 'version:', 'n_points:' or '{{'")
        header[key.strip()] = value.strip()
    else:
        raise DataFormatError(f"{path}: no '{{' line")
    try:
        n_points = int(header["n_points"])
    except (KeyError, ValueError):
        raise DataFormatError(f"{path}: missing or bad 'n_points:' header") from None
    start = lineno
    points = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if line.strip() == "}":
            break
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError(f"expected 2 fields, got {len(fields)}")
            points.append((float(fields[0]), float(fields[1])))
        except ValueError as exc:
            raise DataFormatError(f"{path}:{lineno}: bad point line {line!r} ({exc})") from None
    else:
        raise DataFormatError(f"{path}: no closing '}}' line")
    if len(points) != n_points:
        raise DataFormatError(f"{path}: n_points is {n_points} but {len(points)} points follow")
    if any(line.strip() for line in lines[lineno:]):
        raise DataFormatError(f"{path}:{lineno + 1}: text after the closing '}}'")
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def write_pts(
    path: str | Path, points: np.ndarray | Sequence[Sequence[float]], decimals: int = 6
) -> None:
    """Write ``(n, 2)`` points as an iBUG ``.pts`` file, atomically."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("points must be finite")
    lines = ["version: 1", f"n_points:  {len(array)}", "{"]
    lines += [f"{x:.{decimals}f} {y:.{decimals}f}" for x, y in array]
    lines.append("}")
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def five_points(pts68: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """insightface's 5 points from 68 (0-based): eye centres (36+39)/2 and (42+45)/2, nose
    tip 33, mouth corners 48 and 54; float64 ``(5, 2)``, in the ArcFace template's order."""
    pts = np.asarray(pts68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
    return np.stack(
        [
            (pts[36] + pts[39]) / 2,
            (pts[42] + pts[45]) / 2,
            pts[33],
            pts[48],
            pts[54],
        ]
    )
