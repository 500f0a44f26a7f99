"""IJB-B / IJB-C protocol files: insightface's ``meta/`` text files and NIST's 1:N / 1:1 CSVs.

insightface (``<root>/IJBC/meta/``; one record a line, single spaces, no header):

- ``ijbc_face_tid_mid.txt``: ``image_name template_id media_id``, e.g. ``1.jpg 1 69544``
- ``ijbc_template_pair_label.txt``: ``tid1 tid2 label``, e.g. ``1 11065 1`` (1 = genuine)
- ``ijbc_name_5pts_score.txt``: ``name x1 y1 ... x5 y5 faceness`` (12 fields; landmarks in the
  ``loose_crop/`` image, printed with fixed decimals, 3 in the released files)

NIST (comma separated):

- ``ijbc_1N_gallery_G1.csv``, ``_G2.csv``, ``ijbc_1N_probe_mixed.csv`` (IJB-B: ``_S1``/``_S2``):
  header ``TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,FACE_X,...``, then one row a face.
- ``ijbc_11_G1_G2_matches.csv``: ``reference_tid,probe_tid`` a line, no header.

Files in the canonical layout (one separator byte between fields, ``\\n`` line ends) are parsed
vectorised with numpy (IJB-C's 15.66M pair lines in about 3 s); anything else takes a tolerant
line-by-line path that also pinpoints the first malformed line. Writers emit the canonical layout,
so reading and writing a canonical file reproduces it byte for byte.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from arcflow.atomic import atomic_file
from arcflow.errors import DataFormatError

_NL, _SP, _COMMA = 10, 32, 44
_CHUNK = 1 << 20  # rows formatted at once by the writers

LANDMARK_FIELDS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4", "x5", "y5")
CSV_KEY_COLUMNS = ("TEMPLATE_ID", "SUBJECT_ID", "FILENAME")
MATCHES_HEADER = ("REFERENCE_TEMPLATE_ID", "PROBE_TEMPLATE_ID")


@dataclass(frozen=True, eq=False)
class FaceTidMid:
    """``<x>_face_tid_mid.txt``: image i is in template_ids[i], from media media_ids[i]."""

    names: np.ndarray  # (N,) str
    template_ids: np.ndarray  # (N,) int64
    media_ids: np.ndarray  # (N,) int64


@dataclass(frozen=True, eq=False)
class TemplatePairs:
    """``<x>_template_pair_label.txt``: pair i compares template1[i] with template2[i]."""

    template1: np.ndarray  # (P,) int64
    template2: np.ndarray  # (P,) int64
    labels: np.ndarray  # (P,) int8, 1 genuine / 0 impostor


@dataclass(frozen=True, eq=False)
class FivePoints:
    """``<x>_name_5pts_score.txt``: 5 landmarks (eyes, nose, mouth corners) and a faceness score."""

    names: np.ndarray  # (N,) str
    landmarks: np.ndarray  # (N, 5, 2) float32, (x, y) pixels in the loose crop
    scores: np.ndarray  # (N,) float32
    landmark_decimals: int = 3
    score_decimals: int = 3


@dataclass(frozen=True, eq=False)
class TemplateTable:
    """A NIST 1:N template list; columns after FILENAME are kept verbatim as text."""

    header: tuple[str, ...]
    template_ids: np.ndarray  # (N,) int64
    subject_ids: np.ndarray  # (N,) int64
    filenames: np.ndarray  # (N,) str
    extra: np.ndarray  # (N, len(header) - 3) str: SIGHTING_ID, FACE_X, ...
    newline: str = "\n"

    def column(self, name: str) -> np.ndarray:
        """The column called ``name`` (ids as int64, everything else as text)."""
        if name not in self.header:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.header)}")
        index = self.header.index(name)
        if index < 3:
            return (self.template_ids, self.subject_ids, self.filenames)[index]
        return self.extra[:, index - 3]


@dataclass(frozen=True, eq=False)
class TemplateMatches:
    """``ijbc_11_G1_G2_matches.csv``: 1:1 comparison i is reference_ids[i] vs probe_ids[i]."""

    reference_ids: np.ndarray  # (P,) int64
    probe_ids: np.ndarray  # (P,) int64
    header: bool = False  # the NIST file has none; a header line is accepted and kept


@dataclass(frozen=True)
class IJBFiles:
    """Where insightface's IJB release keeps one benchmark's files."""

    face_tid_mid: Path
    template_pair_label: Path
    name_5pts_score: Path
    loose_crop: Path
    gallery1: Path
    gallery2: Path
    probe_mixed: Path


def ijb_files(root: str | Path, benchmark: Literal["ijbb", "ijbc"]) -> IJBFiles:
    """Paths under ``root`` (the ``IJB_release`` folder holding ``IJBB/`` and ``IJBC/``)."""
    if benchmark not in ("ijbb", "ijbc"):
        raise ValueError(f"benchmark must be 'ijbb' or 'ijbc', not {benchmark!r}")
    base = Path(root) / benchmark.upper()
    meta = base / "meta"
    g1, g2 = ("G1", "G2") if benchmark == "ijbc" else ("S1", "S2")
    return IJBFiles(
        face_tid_mid=meta / f"{benchmark}_face_tid_mid.txt",
        template_pair_label=meta / f"{benchmark}_template_pair_label.txt",
        name_5pts_score=meta / f"{benchmark}_name_5pts_score.txt",
        loose_crop=base / "loose_crop",
        gallery1=meta / f"{benchmark}_1N_gallery_{g1}.csv",
        gallery2=meta / f"{benchmark}_1N_gallery_{g2}.csv",
        probe_mixed=meta / f"{benchmark}_1N_probe_mixed.csv",
    )


# ---------------------------------------------------------------- insightface meta files


def read_face_tid_mid(path: str | Path) -> FaceTidMid:
    """Parse ``<x>_face_tid_mid.txt``."""
    path = Path(path)
    fields = ("image_name", "template_id", "media_id")
    names, values = _parse_table(path, path.read_bytes(), fields, text=True, dtype=np.int64)
    return FaceTidMid(names, _col(values, 0), _col(values, 1))


def write_face_tid_mid(path: str | Path, meta: FaceTidMid) -> None:
    """Write ``meta`` in insightface's layout, atomically."""
    n = _same_length(meta.names, meta.template_ids, meta.media_ids)

    def cols(s: slice) -> list[list[_Cell]]:
        return [
            _text_cells(meta.names[s]),
            _int_cells(meta.template_ids[s]),
            _int_cells(meta.media_ids[s]),
        ]

    _write_rows(path, n, cols, _SP)


def read_template_pair_label(path: str | Path) -> TemplatePairs:
    """Parse ``<x>_template_pair_label.txt`` (15.66M lines for IJB-C)."""
    path = Path(path)
    _, values = _parse_table(
        path, path.read_bytes(), ("tid1", "tid2", "label"), text=False, dtype=np.int64
    )
    labels = values[:, 2]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise DataFormatError(f"{path}:{bad[0] + 1}: label {labels[bad[0]]} is not 0 or 1")
    return TemplatePairs(_col(values, 0), _col(values, 1), labels.astype(np.int8))


def write_template_pair_label(path: str | Path, pairs: TemplatePairs) -> None:
    """Write ``pairs`` in insightface's layout, atomically."""
    n = _same_length(pairs.template1, pairs.template2, pairs.labels)

    def cols(s: slice) -> list[list[_Cell]]:
        return [
            _int_cells(pairs.template1[s]),
            _int_cells(pairs.template2[s]),
            _int_cells(pairs.labels[s]),
        ]

    _write_rows(path, n, cols, _SP)


def read_name_5pts_score(path: str | Path) -> FivePoints:
    """Parse ``<x>_name_5pts_score.txt``; the decimals of its first line are kept for writing."""
    path = Path(path)
    data = path.read_bytes()
    fields = ("name", *LANDMARK_FIELDS, "faceness")
    names, values = _parse_table(path, data, fields, text=True, dtype=np.float64)
    first = _first_line(data).split()
    decimals = (
        (max(_decimals(t) for t in first[1:11]), _decimals(first[11]))
        if len(first) == 12
        else (3, 3)
    )
    landmarks = values[:, :10].astype(np.float32).reshape(-1, 5, 2)
    return FivePoints(names, landmarks, values[:, 10].astype(np.float32), *decimals)


def write_name_5pts_score(path: str | Path, points: FivePoints) -> None:
    """Write ``points`` with fixed decimals (``%.3f`` by default), atomically."""
    n = _same_length(points.names, points.landmarks, points.scores)
    landmarks = np.asarray(points.landmarks, np.float32)
    if landmarks.shape != (n, 5, 2):
        raise ValueError(f"landmarks must have shape ({n}, 5, 2), not {landmarks.shape}")
    landmarks = landmarks.reshape(n, 10)
    scores = np.asarray(points.scores, np.float32)

    def cols(s: slice) -> list[list[_Cell]]:
        out = [_text_cells(points.names[s])]
        out += [_fixed_cells(landmarks[s, j], points.landmark_decimals) for j in range(10)]
        return [*out, _fixed_cells(scores[s], points.score_decimals)]

    _write_rows(path, n, cols, _SP)


# ---------------------------------------------------------------- NIST CSVs


def read_template_table(path: str | Path) -> TemplateTable:
    """Parse a NIST 1:N template CSV (``ijbc_1N_gallery_G1.csv``, ``..._probe_mixed.csv``, ...)."""
    path = Path(path)
    text = _decode(path, path.read_bytes())
    newline = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
    reader = csv.reader(io.StringIO(text, newline=""))
    header = tuple(next(reader, ()))
    if header[:3] != CSV_KEY_COLUMNS:
        raise DataFormatError(
            f"{path}:1: header must start with {','.join(CSV_KEY_COLUMNS)}, "
            f"got {','.join(header)!r}"
        )
    rows, linenos = [], []
    for row in reader:
        if len(row) != len(header):
            raise DataFormatError(
                f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}: {row!r}"
            )
        rows.append(row)
        linenos.append(reader.line_num)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    tids = _ints_or_fail(path, columns[0], linenos, header[0])
    sids = _ints_or_fail(path, columns[1], linenos, header[1])
    extra = np.array(rows, dtype=np.str_).reshape(len(rows), len(header))[:, 3:]
    return TemplateTable(header, tids, sids, np.array(columns[2], dtype=np.str_), extra, newline)


def write_template_table(path: str | Path, table: TemplateTable) -> None:
    """Write ``table`` as CSV (minimal quoting, the table's line ends), atomically."""
    n = _same_length(table.template_ids, table.subject_ids, table.filenames, table.extra)
    if table.header[:3] != CSV_KEY_COLUMNS or np.shape(table.extra) != (n, len(table.header) - 3):
        raise ValueError("header must start with TEMPLATE_ID,SUBJECT_ID,FILENAME and match extra")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=table.newline)
    writer.writerow(table.header)
    tids, sids = table.template_ids.tolist(), table.subject_ids.tolist()
    files, extra = table.filenames.tolist(), table.extra.tolist()
    writer.writerows([t, s, f, *e] for t, s, f, e in zip(tids, sids, files, extra, strict=True))
    with atomic_file(path) as tmp:
        tmp.write_bytes(buf.getvalue().encode("utf-8"))


def read_matches(path: str | Path) -> TemplateMatches:
    """Parse ``ijbc_11_G1_G2_matches.csv`` (no header in the NIST release; one is tolerated)."""
    path = Path(path)
    data = path.read_bytes()
    first = _first_line(data).strip()
    header = tuple(first.decode("utf-8", "replace").split(",")) == MATCHES_HEADER
    if header:
        data = data[data.index(b"\n") + 1 :] if b"\n" in data else b""
    fields = ("reference_template_id", "probe_template_id")
    _, values = _parse_table(
        path, data, fields, text=False, dtype=np.int64, sep=_COMMA, line0=1 + header
    )
    return TemplateMatches(_col(values, 0), _col(values, 1), header)


def write_matches(path: str | Path, matches: TemplateMatches) -> None:
    """Write ``matches`` as ``ref,probe`` lines (plus the header line if it has one), atomically."""
    n = _same_length(matches.reference_ids, matches.probe_ids)
    head = (",".join(MATCHES_HEADER) + "\n").encode() if matches.header else b""

    def cols(s: slice) -> list[list[_Cell]]:
        return [_int_cells(matches.reference_ids[s]), _int_cells(matches.probe_ids[s])]

    _write_rows(path, n, cols, _COMMA, head)


# ---------------------------------------------------------------- parsing


def _parse_table(
    path: Path,
    data: bytes,
    fields: tuple[str, ...],
    *,
    text: bool,
    dtype: type,
    sep: int = _SP,
    line0: int = 1,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Lines of ``fields`` (the first one text if ``text``, the rest numbers of ``dtype``)."""
    fast = _parse_fast(data, len(fields), text, dtype, sep)
    if fast is not None:
        return fast
    return _parse_slow(path, data, fields, text, dtype, sep, line0)


def _parse_fast(
    data: bytes, ncols: int, text: bool, dtype: type, sep: int
) -> tuple[np.ndarray | None, np.ndarray] | None:
    """Vectorised parse of a canonical file, or None when the file is not canonical or not valid."""
    nnum = ncols - int(text)
    if b"\r" in data or b"\t" in data:
        return None
    if data and not data.endswith(b"\n"):
        data += b"\n"
    n = data.count(b"\n")
    if n == 0:
        return (np.empty(0, np.str_) if text else None), np.empty((0, nnum), dtype)
    arr = np.frombuffer(data, np.uint8)
    is_sep = (arr == sep) | (arr == _NL)
    if is_sep[0] or (is_sep[1:] & is_sep[:-1]).any():  # an empty field
        return None
    seps = arr[is_sep]
    if seps.size != n * ncols:
        return None
    seps = seps.reshape(n, ncols)
    if not ((seps[:, :-1] == sep).all() and (seps[:, -1] == _NL).all()):
        return None
    del seps
    names = None
    if text:
        pos = np.flatnonzero(is_sep).reshape(n, ncols)
        starts = np.empty(n, np.int64)
        starts[0], starts[1:] = 0, pos[:-1, -1] + 1
        ends = pos[:, 0]
        raw = np.array([data[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
        try:
            names = np.char.decode(raw, "utf-8")
        except UnicodeDecodeError:
            return None
        step = np.zeros(arr.size + 1, np.int8)
        step[starts], step[ends] = 1, -1
        buf = arr.copy()
        buf[np.cumsum(step[:-1], dtype=np.int8).astype(bool)] = _SP
        data = buf.tobytes()
    elif sep != _SP:
        data = data.replace(bytes([sep]), b" ")
    del is_sep, arr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy < 2: partial read warning
        try:
            values = np.fromstring(data, dtype=dtype, sep=" ")
        except ValueError:
            return None
    if values.size != n * nnum:
        return None
    return names, values.reshape(n, nnum)


def _parse_slow(
    path: Path,
    data: bytes,
    fields: tuple[str, ...],
    text: bool,
    dtype: type,
    sep: int,
    line0: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Line-by-line parse tolerant of whitespace; raises at the first malformed line."""
    lines = _decode(path, data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    conv: Callable[[str], float] = int if np.issubdtype(dtype, np.integer) else float
    what = "an integer" if conv is int else "a number"
    names: list[str] = []
    values: list[list[float]] = []
    for lineno, line in enumerate(lines, start=line0):
        toks = line.split() if sep == _SP else line.rstrip("\r").split(chr(sep))
        if len(toks) != len(fields):
            raise DataFormatError(
                f"{path}:{lineno}: expected {len(fields)} fields ({' '.join(fields)}), "
                f"got {len(toks)}: {line!r}"
            )
        if text:
            names.append(toks[0])
        row = []
        for name, tok in zip(fields[int(text) :], toks[int(text) :], strict=True):
            try:
                row.append(conv(tok))
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: {name} {tok!r} is not {what}") from None
        values.append(row)
    nnum = len(fields) - int(text)
    try:
        array = np.array(values, dtype=dtype).reshape(len(values), nnum)
    except OverflowError:
        raise DataFormatError(f"{path}: a value does not fit in {np.dtype(dtype).name}") from None
    return (np.array(names, dtype=np.str_) if text else None), array


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: byte offset {exc.start}: not UTF-8 text") from None


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return data if end < 0 else data[:end]


def _decimals(token: bytes) -> int:
    frac = token.partition(b".")[2]
    return len(frac) - len(frac.lstrip(b"0123456789")) if frac else 0


def _col(values: np.ndarray, j: int) -> np.ndarray:
    return np.ascontiguousarray(values[:, j])


def _ints_or_fail(path: Path, column: tuple[str, ...], linenos: list[int], name: str) -> np.ndarray:
    try:
        return np.array(column, dtype=np.str_).astype(np.int64)
    except (ValueError, OverflowError):
        for value, lineno in zip(column, linenos, strict=True):
            try:
                int(value)
            except ValueError:
                raise DataFormatError(
                    f"{path}:{lineno}: {name} {value!r} is not an integer"
                ) from None
        raise DataFormatError(f"{path}: {name} does not fit in int64") from None


# ---------------------------------------------------------------- vectorised formatting

_Cell = tuple[np.ndarray, np.ndarray]  # (n, w) uint8 bytes and (n, w) bool mask of those to keep


def _same_length(*arrays: object) -> int:
    lengths = {len(a) for a in arrays}  # type: ignore[arg-type]
    if len(lengths) != 1:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    return lengths.pop()


def _digits(u: np.ndarray, width: int | None = None) -> _Cell:
    """Right-aligned decimal digits of non-negative ints; the mask drops leading zeros."""
    top = int(u.max()) if u.size else 0
    w = width or len(str(top))
    mat = np.empty((u.size, w), np.uint8)
    rest = u.astype(np.int64, copy=True)
    for j in range(w - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        mat[:, j] = digit + 48
    if width:
        return mat, np.ones(mat.shape, bool)
    ndigits = np.ones(u.size, np.int64)
    for k in range(1, w):
        ndigits += u >= 10**k
    return mat, np.arange(w) >= (w - ndigits)[:, None]


def _sign(negative: np.ndarray) -> _Cell:
    return np.full((negative.size, 1), ord("-"), np.uint8), negative.reshape(-1, 1)


def _int_cells(values: np.ndarray) -> list[_Cell]:
    v = np.asarray(values).astype(np.int64)
    return [_sign(v < 0), _digits(np.abs(v))]


def _fixed_cells(values: np.ndarray, decimals: int) -> list[_Cell]:
    """``f"{v:.{decimals}f}"`` for every v (exact for float32 input and decimals <= 8)."""
    v = np.asarray(values, np.float64)
    if not np.isfinite(v).all():
        raise ValueError("cannot write NaN or infinite values")
    scaled = np.rint(np.abs(v) * 10.0**decimals).astype(np.int64)
    whole, frac = np.divmod(scaled, 10**decimals)
    cells = [_sign(np.signbit(v)), _digits(whole)]
    if decimals:
        cells += [_const(v.size, b"."), _digits(frac, decimals)]
    return cells


def _text_cells(names: np.ndarray) -> list[_Cell]:
    raw = np.char.encode(np.asarray(names, dtype=np.str_), "utf-8")
    mat = raw.view(np.uint8).reshape(raw.size, raw.dtype.itemsize)
    keep = mat != 0
    if raw.size and (~keep.any(axis=1) | np.isin(mat, (9, 10, 13, 32)).any(axis=1)).any():
        raise ValueError("names must be non-empty and contain no whitespace")
    return [(mat, keep)]


def _const(n: int, text: bytes) -> _Cell:
    mat = np.tile(np.frombuffer(text, np.uint8), (n, 1))
    return mat, np.ones(mat.shape, bool)


def _format(columns: list[list[_Cell]], sep: int, n: int) -> bytes:
    cells: list[_Cell] = []
    for j, column in enumerate(columns):
        if j:
            cells.append(_const(n, bytes([sep])))
        cells += column
    cells.append(_const(n, b"\n"))
    mats = np.hstack([c[0] for c in cells])
    keep = np.hstack([c[1] for c in cells])
    return mats[keep].tobytes()


def _write_rows(
    path: str | Path,
    n: int,
    columns: Callable[[slice], list[list[_Cell]]],
    sep: int,
    head: bytes = b"",
) -> None:
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        f.write(head)
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            f.write(_format(columns(slice(start, stop)), sep, stop - start))
