"""The embeddings directory: round trip, atomic replace, and every hostile file refused with one
clear DataFormatError naming the file and the field (object arrays without unpickling)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arcflow.errors import DataFormatError
from arcflow.serve.embeddings_file import (
    FORMAT,
    VERSION,
    EmbeddingsFile,
    read_embeddings,
    write_embeddings,
)

pytestmark = pytest.mark.unit

UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("ran")
    return "boom"


class Payload:
    """Unpickling this would run code: it must never happen."""

    def __reduce__(self):
        return (_record_unpickling, ())


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sample(tmp_path: Path, *, optional: bool = True) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    data = {
        "embeddings": unit(rng, 6, 8),
        "image": ["bob/1.jpg", "bob/2.jpg", "ann/1.jpg", "ann/1.jpg", "group.jpg", "zoé/1.jpg"],
        "face": [0, 0, 0, 1, 3, 0],
        "identity": ["bob", "bob", "ann", "ann", "", "zoé"],
        "model": "models:/arcflow@champion (v3)",
    }
    if optional:
        data["box"] = rng.uniform(0, 100, (6, 4))
        data["score"] = rng.uniform(0.5, 1, 6)
    path = write_embeddings(tmp_path / "gallery.emb", **data)
    return path, data


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path: Path, mmap: bool) -> None:
    path, data = sample(tmp_path)
    got = read_embeddings(path, mmap=mmap)
    assert isinstance(got, EmbeddingsFile)
    assert (got.count, got.dim, got.model, got.version) == (6, 8, data["model"], VERSION)
    assert isinstance(got.embeddings, np.memmap) == mmap
    assert got.embeddings.dtype == np.float32 and got.face.dtype == np.int32
    np.testing.assert_allclose(got.embeddings, data["embeddings"], atol=1e-7)
    assert got.image.tolist() == data["image"]
    assert got.face.tolist() == data["face"]
    assert got.identity.tolist() == data["identity"]
    assert got.identity_names.tolist() == ["", "ann", "bob", "zoé"]
    np.testing.assert_allclose(got.box, data["box"], rtol=1e-6)
    np.testing.assert_allclose(got.score, data["score"], rtol=1e-6)
    meta = json.loads((path / "meta.json").read_text())
    assert meta == {
        "format": FORMAT,
        "version": VERSION,
        "count": 6,
        "dim": 8,
        "model": data["model"],
        "optional": ["box", "score"],
    }


def test_optional_fields_and_identity_default(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = write_embeddings(
        tmp_path / "e", unit(rng, 3, 4), image=["a", "b", "c"], face=[0, 0, 0], model="m"
    )
    got = read_embeddings(path)
    assert got.box is None and got.score is None
    assert got.identity.tolist() == ["", "", ""]
    assert sorted(p.name for p in path.iterdir()) == [
        "embeddings.npy",
        "face.npy",
        "identity.npy",
        "identity_names.npy",
        "image.npy",
        "meta.json",
    ]


@pytest.mark.parametrize("mmap", [True, False])
def test_empty_file_round_trips(tmp_path: Path, mmap: bool) -> None:
    path = write_embeddings(
        tmp_path / "none", np.zeros((0, 16), np.float32), image=[], face=[], model="m"
    )
    got = read_embeddings(path, mmap=mmap)
    assert got.embeddings.shape == (0, 16) and got.image.shape == (0,)


def test_rewrite_replaces_an_earlier_file_but_never_a_foreign_path(tmp_path: Path) -> None:
    path, data = sample(tmp_path)
    data["embeddings"] = data["embeddings"][::-1].copy()
    write_embeddings(path, **data)
    np.testing.assert_allclose(read_embeddings(path).embeddings, data["embeddings"], atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.emb"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(b"jpeg")
    lone = tmp_path / "lone.txt"
    lone.write_text("x")
    for target in (photos, lone):
        with pytest.raises(DataFormatError, match="exists and is not an embeddings directory"):
            write_embeddings(target, **data)
    assert (photos / "me.jpg").read_bytes() == b"jpeg" and lone.read_text() == "x"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embeddings": np.ones((6, 8))}, "embeddings: row 0 has norm 2.82843"),
        ({"embeddings": np.full((6, 8), np.nan)}, "embeddings: row 0 has a NaN"),
        ({"embeddings": np.ones(8)}, "embeddings must be a float \\(N, D >= 1\\) array"),
        ({"image": ["a.jpg"] * 5}, "image must be 6 strings"),
        ({"image": ["a.jpg"] * 5 + [""]}, "image: every row needs a non-empty image name"),
        ({"image": np.array(["a"] * 5 + [7], dtype=object)}, "image must hold only str"),
        ({"face": [0, 0, 0, 0, 0, -1]}, "face: face indices must be >= 0"),
        ({"face": [0.5] * 6}, "face must be 6 integers"),
        ({"identity": ["x"] * 7}, "identity must be 6 strings"),
        ({"box": np.zeros((6, 3))}, "box must be a \\(6, 4\\) number array"),
        ({"score": np.full(6, np.inf)}, "score: row 0 has a NaN or infinite value"),
    ],
)
def test_writer_refuses_bad_data(tmp_path: Path, change: dict, message: str) -> None:
    path, data = sample(tmp_path)
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(DataFormatError, match=message):
        write_embeddings(path, **{**data, **change})
    assert sorted(p.name for p in path.iterdir()) == before  # the earlier file is untouched


def save(path: Path, field: str, array: np.ndarray, **kwargs) -> None:
    with open(path / f"{field}.npy", "wb") as f:
        np.save(f, array, **kwargs)


def edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, **changes}))


def raw_header(path: Path, field: str, header: dict, data: bytes) -> None:
    with open(path / f"{field}.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)


def truncate(path: Path, field: str, cut: int) -> None:
    raw = (path / f"{field}.npy").read_bytes()
    (path / f"{field}.npy").write_bytes(raw[:-cut])


def _bad_norm(p: Path) -> None:
    emb = np.load(p / "embeddings.npy")
    emb[4] *= 1.01
    save(p, "embeddings", emb)


def _nan_row(p: Path) -> None:
    emb = np.load(p / "embeddings.npy")
    emb[2, 5] = np.nan
    save(p, "embeddings", emb)


HOSTILE = {
    "wrong dtype": (
        lambda p: save(p, "embeddings", np.load(p / "embeddings.npy").astype(np.float64)),
        "embeddings.npy: embeddings: dtype <f8, expected <f4",
    ),
    "big-endian dtype": (
        lambda p: save(p, "embeddings", np.load(p / "embeddings.npy").astype(">f4")),
        "embeddings.npy: embeddings: dtype >f4, expected <f4",
    ),
    "Fortran order": (
        lambda p: save(p, "embeddings", np.asfortranarray(np.load(p / "embeddings.npy"))),
        "embeddings.npy: embeddings: Fortran order",
    ),
    "object image names": (
        lambda p: save(p, "image", np.array([Payload()] * 6, dtype=object), allow_pickle=True),
        "image.npy: image: dtype .* holds Python objects; refused \\(never unpickled\\)",
    ),
    "object identity names": (
        lambda p: save(p, "identity_names", np.array([Payload()], dtype=object), allow_pickle=True),
        "identity_names.npy: identity_names: dtype .* holds Python objects",
    ),
    "bytes image names": (
        lambda p: save(p, "image", np.array([b"a"] * 6)),
        "image.npy: image: dtype \\|S1 is not little-endian unicode text",
    ),
    "mismatched length": (
        lambda p: save(p, "face", np.zeros(5, np.int32)),
        "face.npy: face: shape \\(5,\\), expected \\(6,\\) \\(from meta.json\\)",
    ),
    "wrong dim": (
        lambda p: edit_meta(p, dim=9),
        "embeddings.npy: embeddings: shape \\(6, 8\\), expected \\(6, 9\\)",
    ),
    "NaN row": (_nan_row, "embeddings.npy: embeddings: row 2 has a NaN or infinite value"),
    "non-unit row": (_bad_norm, "embeddings.npy: embeddings: row 4 has norm 1.01"),
    "truncated": (
        lambda p: truncate(p, "embeddings", 3),
        "embeddings.npy: embeddings: 189 data bytes, expected 192 \\(truncated or padded\\)",
    ),
    "padded": (
        lambda p: (p / "face.npy").write_bytes((p / "face.npy").read_bytes() + b"\0" * 4),
        "face.npy: face: 28 data bytes, expected 24",
    ),
    "huge claimed shape": (
        lambda p: (
            edit_meta(p, count=10**12),
            raw_header(
                p,
                "embeddings",
                {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)},
                b"\0" * 64,
            ),
        ),
        "embeddings.npy: embeddings: 64 data bytes, expected 32000000000000",
    ),
    "not an npy": (
        lambda p: (p / "face.npy").write_bytes(b"PK\x03\x04 a zip, not an array"),
        "face.npy: face: not a valid .npy header",
    ),
    "header without a shape": (
        lambda p: (p / "face.npy").write_bytes(
            b"\x93NUMPY\x01\x00" + (16).to_bytes(2, "little") + b"{'descr':'<i4'}\n"
        ),
        "face.npy: face: not a valid .npy header",
    ),
    "header that is code": (
        lambda p: (p / "face.npy").write_bytes(
            b"\x93NUMPY\x01\x00" + (24).to_bytes(2, "little") + b"__import__('os').exit()\n"
        ),
        "face.npy: face: not a valid .npy header",
    ),
    "missing file": (
        lambda p: (p / "score.npy").unlink(),
        "score.npy: score: cannot read",
    ),
    "empty image name": (
        lambda p: save(p, "image", np.array(["a", "b", "c", "", "e", "f"])),
        "image.npy: image: row 3 is empty",
    ),
    "negative face": (
        lambda p: save(p, "face", np.array([0, 0, -2, 0, 0, 0], np.int32)),
        "face.npy: face: row 2 is negative",
    ),
    "identity out of range": (
        lambda p: save(p, "identity", np.array([0, 1, 2, 3, 4, 0], np.int32)),
        "identity.npy: identity: indices must be in \\[0, 4\\)",
    ),
    "unsorted identity names": (
        lambda p: save(p, "identity_names", np.array(["", "bob", "ann", "zoé"])),
        "identity_names.npy: identity_names: not sorted and unique",
    ),
    "infinite box": (
        lambda p: save(p, "box", np.full((6, 4), np.inf, np.float32)),
        "box.npy: box: row 0 has a NaN or infinite value",
    ),
    "wrong version": (
        lambda p: edit_meta(p, version=2),
        "meta.json: version: 2 is not supported \\(this ArcFlow reads 1\\)",
    ),
    "version as a string": (
        lambda p: edit_meta(p, version="1"),
        "meta.json: version: '1' is not supported",
    ),
    "wrong format": (lambda p: edit_meta(p, format="npz"), 'meta.json: format: expected "'),
    "negative count": (lambda p: edit_meta(p, count=-1), "meta.json: count: expected an integer"),
    "boolean dim": (lambda p: edit_meta(p, dim=True), "meta.json: dim: expected an integer >= 1"),
    "unknown optional": (
        lambda p: edit_meta(p, optional=["landmarks"]),
        "meta.json: optional: expected a subset",
    ),
    "meta not JSON": (
        lambda p: (p / "meta.json").write_bytes(b"\xff{not json"),
        "meta.json: not valid JSON",
    ),
    "meta too large": (
        lambda p: (p / "meta.json").write_bytes(b" " * (2 << 20)),
        "meta.json: larger than",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("mmap", [True, False])
def test_hostile_files_give_one_clear_error(tmp_path: Path, case: str, mmap: bool) -> None:
    path, _ = sample(tmp_path)
    corrupt, message = HOSTILE[case]
    corrupt(path)
    UNPICKLED.clear()
    with pytest.raises(DataFormatError, match=message) as info:
        read_embeddings(path, mmap=mmap)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    assert info.value.hint
    assert UNPICKLED == []


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="not an embeddings directory"):
        read_embeddings(tmp_path / "absent.emb")
