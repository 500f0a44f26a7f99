"""MegaFace Challenge 1 devkit files: feature lists, per-image feature files and noise lists.

- Feature lists (``devkit/templatelists/``): ``megaface_features_list.json_<size>_<set>`` is
  ``{"path": [...]}`` (distractor image paths, e.g. ``534/53415754@N00/37731000_1.jpg``);
  ``facescrub_features_list.json`` is ``{"path": [...], "id": [...]}`` (probe paths and the
  identity of each). Written here as ``json.dumps`` does by default (``", "`` / ``": "``, no
  trailing newline), so lists written here round-trip byte for byte.
- Feature files: one a image, ``<feature root>/<list path><ending>`` (e.g.
  ``11084833664_0.jpg_LBP_100x100.bin``): an OpenCV-style matrix, 4 little-endian int32
  (rows, cols, row stride in bytes = cols * 4, type = 5 i.e. CV_32F) then rows * cols float32.
  insightface writes a d-dim feature as rows = d, cols = 1.
- Noise lists (insightface's ``facescrub_noises.txt``, ``megaface_noises.txt``): one image a line;
  lines starting with ``#`` are comments (the files open with one); a megaface line may be
  ``<field>\\t<path>``, in which case the path is the second field.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arcflow.atomic import atomic_file
from arcflow.data.protocols.text import exact_lines
from arcflow.errors import DataFormatError

CV_32F = 5
HEADER_BYTES = 16
FACESCRUB_LIST = "facescrub_features_list.json"
SIZES = (10, 100, 1000, 10000, 100000, 1000000)


def megaface_list_name(size: int, set_index: int = 1) -> str:
    """The devkit's distractor list for ``size`` distractors, e.g. ``..._1000000_1``."""
    return f"megaface_features_list.json_{size}_{set_index}"


def feature_file(root: str | Path, image_path: str, ending: str) -> Path:
    """Where the devkit looks for the feature of ``image_path``: ``root/<image_path><ending>``."""
    return Path(root) / f"{image_path}{ending}"


# ---------------------------------------------------------------- feature lists


@dataclass(frozen=True)
class FeatureList:
    """A devkit template list: image paths, plus one identity each for the probe list."""

    paths: tuple[str, ...]
    ids: tuple[str | int, ...] | None = None


def read_feature_list(path: str | Path) -> FeatureList:
    """Parse a devkit feature-list JSON (``"path"`` required, ``"id"`` optional)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: {exc.msg} (column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: byte offset {exc.start}: not UTF-8 text") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("path"), list):
        raise DataFormatError(f"{path}: expected a JSON object with a 'path' list")
    paths = obj["path"]
    for i, item in enumerate(paths):
        if not isinstance(item, str) or not item:
            raise DataFormatError(f"{path}: path[{i}] is {item!r}, not a relative image path")
    ids = obj.get("id")
    if ids is None:
        return FeatureList(tuple(paths))
    if not isinstance(ids, list) or len(ids) != len(paths):
        count = len(ids) if isinstance(ids, list) else type(ids).__name__
        raise DataFormatError(
            f"{path}: 'id' must list one identity per path ({len(paths)}), got {count}"
        )
    for i, item in enumerate(ids):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise DataFormatError(f"{path}: id[{i}] is {item!r}, not a name or number")
    return FeatureList(tuple(paths), tuple(ids))


def write_feature_list(path: str | Path, features: FeatureList) -> None:
    """Write ``features`` as devkit JSON, atomically."""
    obj: dict[str, list[str | int]] = {"path": list(features.paths)}
    if features.ids is not None:
        if len(features.ids) != len(features.paths):
            raise ValueError(f"{len(features.ids)} ids for {len(features.paths)} paths")
        obj["id"] = list(features.ids)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj))


# ---------------------------------------------------------------- feature files


def parse_mat_header(path: str | Path, head: bytes, size: int) -> tuple[int, int]:
    """Check a devkit matrix header against the file's ``size``; returns (rows, cols)."""
    if len(head) < HEADER_BYTES:
        raise DataFormatError(
            f"{path}: byte offset {len(head)}: truncated header, file is {size} bytes, "
            f"the header alone needs {HEADER_BYTES}"
        )
    rows, cols, stride, kind = struct.unpack("<4i", head[:HEADER_BYTES])
    if kind != CV_32F:
        raise DataFormatError(
            f"{path}: byte offset 12: matrix type {kind} is not {CV_32F} (CV_32F)"
        )
    if rows < 0 or cols < 0:
        raise DataFormatError(
            f"{path}: byte offset {0 if rows < 0 else 4}: negative shape {rows}x{cols}"
        )
    if stride != cols * 4:
        raise DataFormatError(
            f"{path}: byte offset 8: row stride {stride} != cols * 4 = {cols * 4}"
        )
    expected = HEADER_BYTES + rows * cols * 4
    if size != expected:
        what = "truncated" if size < expected else "trailing bytes"
        raise DataFormatError(
            f"{path}: byte offset {min(size, expected)}: {what}, file is {size} bytes, "
            f"a {rows}x{cols} float32 matrix takes {expected}"
        )
    return rows, cols


def mat_header(rows: int, cols: int) -> bytes:
    """The 16-byte header of a ``rows`` x ``cols`` float32 matrix."""
    return struct.pack("<4i", rows, cols, cols * 4, CV_32F)


def read_feature(path: str | Path) -> np.ndarray:
    """One feature file as a (rows, cols) float32 array ((d, 1) for insightface's)."""
    path = Path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        rows, cols = parse_mat_header(path, f.read(HEADER_BYTES), size)
        data = np.fromfile(f, dtype="<f4", count=rows * cols)
    return data.astype(np.float32, copy=False).reshape(rows, cols)


def write_feature(path: str | Path, feature: np.ndarray) -> None:
    """Write one feature file, atomically; a 1-D feature is stored as d x 1 like insightface."""
    mat = np.asarray(feature, dtype="<f4")
    if mat.ndim == 1:
        mat = mat.reshape(-1, 1)
    if mat.ndim != 2:
        raise ValueError(f"a feature must be 1-D or 2-D, not {mat.ndim}-D")
    with atomic_file(path) as tmp:
        tmp.write_bytes(mat_header(*mat.shape) + np.ascontiguousarray(mat).tobytes())


def read_features(paths: Sequence[str | Path]) -> np.ndarray:
    """Feature files of one shape as an (N, rows * cols) float32 array, header checks vectorised."""
    if not paths:
        return np.empty((0, 0), np.float32)
    rows, cols = read_feature(paths[0]).shape
    dim = rows * cols
    size = HEADER_BYTES + 4 * dim
    heads = np.empty((len(paths), 4), "<i4")
    out = np.empty((len(paths), dim), "<f4")
    for i, p in enumerate(paths):
        with open(p, "rb") as f:
            if (
                os.fstat(f.fileno()).st_size != size
                or f.readinto(heads[i]) != HEADER_BYTES
                or f.readinto(out[i]) != 4 * dim
            ):
                _unlike_first(p, rows, cols)
    bad = np.flatnonzero((heads != np.array([rows, cols, cols * 4, CV_32F])).any(axis=1))
    if bad.size:
        _unlike_first(paths[bad[0]], rows, cols)
    return out.astype(np.float32, copy=False)


def _unlike_first(path: str | Path, rows: int, cols: int) -> None:
    shape = read_feature(path).shape  # raises the precise error for a malformed file
    raise DataFormatError(
        f"{path}: a {shape[0]}x{shape[1]} feature, the first file is {rows}x{cols}"
    )


# ---------------------------------------------------------------- noise lists


@dataclass(frozen=True)
class NoiseList:
    """insightface's list of mislabelled images, line by line (comments included)."""

    lines: tuple[str, ...]

    @property
    def comments(self) -> tuple[str, ...]:
        return tuple(line for line in self.lines if line.startswith("#"))

    @property
    def paths(self) -> tuple[str, ...]:
        """The noisy images: the second tab field of a line that has several, else the line."""
        out = []
        for line in self.lines:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.strip().split("\t")
            out.append(fields[1] if len(fields) > 1 else fields[0])
        return tuple(out)

    @classmethod
    def of(cls, paths: Sequence[str], comment: str | None = None) -> NoiseList:
        """A list of ``paths`` under an optional ``# comment`` line."""
        head = (f"#{comment}",) if comment is not None else ()
        return cls(head + tuple(paths))


def read_noise_list(path: str | Path) -> NoiseList:
    """Parse ``facescrub_noises.txt`` / ``megaface_noises.txt``."""
    path = Path(path)
    lines = exact_lines(path)
    for lineno, line in enumerate(lines, start=1):
        if not line.startswith("#") and len(line.strip().split("\t")) > 2:
            raise DataFormatError(
                f"{path}:{lineno}: expected '<path>' or '<field>\\t<path>': {line!r}"
            )
    return NoiseList(tuple(lines))


def write_noise_list(path: str | Path, noise: NoiseList) -> None:
    """Write ``noise`` one line each, atomically."""
    if any("\n" in line for line in noise.lines):
        raise ValueError("noise list lines cannot contain newlines")
    with atomic_file(path) as tmp:
        tmp.write_bytes("".join(f"{line}\n" for line in noise.lines).encode("utf-8"))
