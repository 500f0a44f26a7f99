"""Trillion-Pairs (DeepGlint) submission: every test image's feature in one binary file.

Layout (the MegaFace devkit matrix, see :mod:`.megaface`): 4 little-endian int32 ``rows, cols,
cols * 4, 5`` (5 = CV_32F), then ``rows * cols`` float32, row-major; row i is the i-th image of
the test set's ``filelist.txt`` (one relative image path a line), 1,862,120 rows in all.
The reader memory-maps the file (a 512-d submission is 3.8 GB) after checking the header
against the file size; :func:`create_features` fills one in place without holding it in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from arcflow.atomic import atomic_file
from arcflow.data.protocols.megaface import HEADER_BYTES, mat_header, parse_mat_header
from arcflow.data.protocols.text import exact_lines, text_lines
from arcflow.errors import DataFormatError

ROWS = 1_862_120
FILE_LIST = "filelist.txt"
_CHUNK_ROWS = 1 << 16


def read_features(path: str | Path, rows: int | None = None) -> np.memmap:
    """Memory-map a submission as a read-only (rows, cols) float32 array.

    ``rows``, if given, is the row count the file must have (e.g. ``len(file_list)``).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    nrows, ncols = parse_mat_header(path, head, size)
    if rows is not None and nrows != rows:
        raise DataFormatError(f"{path}: byte offset 0: header says {nrows} rows, expected {rows}")
    if nrows * ncols == 0:
        raise DataFormatError(f"{path}: byte offset 0: empty {nrows}x{ncols} matrix")
    return np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES, shape=(nrows, ncols))


def write_features(path: str | Path, features: np.ndarray) -> None:
    """Write an (N, d) feature matrix (any float dtype, memmaps included), atomically."""
    if np.ndim(features) != 2:
        raise ValueError(f"features must be 2-D (rows, cols), not {np.ndim(features)}-D")
    rows, cols = np.shape(features)
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        f.write(mat_header(rows, cols))
        for start in range(0, rows, _CHUNK_ROWS):
            chunk = np.ascontiguousarray(features[start : start + _CHUNK_ROWS], dtype="<f4")
            f.write(chunk.tobytes())


@contextlib.contextmanager
def create_features(path: str | Path, rows: int, cols: int) -> Iterator[np.memmap]:
    """Yield a writable zeroed (rows, cols) float32 memmap; ``path`` appears only on success."""
    if rows <= 0 or cols <= 0:
        raise ValueError(f"rows and cols must be positive, not {rows}x{cols}")
    with atomic_file(path) as tmp:
        with tmp.open("wb") as f:
            f.write(mat_header(rows, cols))
            f.truncate(HEADER_BYTES + rows * cols * 4)
        out = np.memmap(tmp, dtype="<f4", mode="r+", offset=HEADER_BYTES, shape=(rows, cols))
        yield out
        out.flush()


def read_file_list(path: str | Path) -> tuple[str, ...]:
    """The image paths of ``filelist.txt``, in row order."""
    path = Path(path)
    lines = exact_lines(path)
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line != line.strip():
            raise DataFormatError(f"{path}:{lineno}: expected one image path, got {line!r}")
    return tuple(lines)


def write_file_list(path: str | Path, names: Sequence[str]) -> None:
    """Write one image path a line, atomically."""
    for name in names:
        if not name or name != name.strip() or "\n" in name:
            raise ValueError(f"bad image path {name!r}")
    with atomic_file(path) as tmp:
        tmp.write_bytes("".join(f"{name}\n" for name in names).encode("utf-8"))


#: ArcFlow's probe list (DeepGlint never published the test labels): ``<image path> <identity>``
#: a line, one line per probe image; every other image of ``filelist.txt`` is a distractor.
LABELS = "labels.txt"


def read_probe_labels(path: str | Path) -> dict[str, str]:
    """``labels.txt`` as {image path: identity}, in file order."""
    labels: dict[str, str] = {}
    for lineno, line in enumerate(text_lines(path), 1):
        fields = line.split()
        if len(fields) != 2:
            raise DataFormatError(f"{path}:{lineno}: expected '<image path> <identity>'")
        if fields[0] in labels:
            raise DataFormatError(f"{path}:{lineno}: {fields[0]} is listed twice")
        labels[fields[0]] = fields[1]
    return labels


def write_probe_labels(path: str | Path, labels: Mapping[str, str]) -> None:
    """Write {image path: identity} as ``labels.txt``, atomically."""
    for name, identity in labels.items():
        if len(name.split()) != 1 or len(str(identity).split()) != 1:
            raise ValueError(f"bad probe entry {name!r} {identity!r}")
    with atomic_file(path) as tmp:
        tmp.write_text("".join(f"{n} {i}\n" for n, i in labels.items()), encoding="utf-8")
