"""Image-folder index: stable labels, skipped entries, saved and extended label maps."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from arcflow.data.imagefolder import (
    extend_label_map,
    read_label_map,
    scan_image_folder,
    write_label_map,
)
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit

IDENTITIES = {
    "0000045": ["001.jpg", "002.jpg"],
    "0000099": ["001.jpg"],
    "Aaron": ["b.PNG", "a.jpeg"],
    "zed": ["x.bmp"],
}


def _make(root: Path, order_seed: int) -> None:
    items = [(ident, name) for ident, names in IDENTITIES.items() for name in names]
    random.Random(order_seed).shuffle(items)  # creation order differs between roots
    for ident, name in items:
        (root / ident).mkdir(parents=True, exist_ok=True)
        (root / ident / name).write_bytes(b"img")


def test_labels_are_stable_across_creation_order(tmp_path: Path) -> None:
    indexes = []
    for seed in (1, 2, 3):
        root = tmp_path / f"r{seed}"
        _make(root, seed)
        indexes.append(scan_image_folder(root))
    first = indexes[0]
    assert first.classes == ("0000045", "0000099", "Aaron", "zed")
    assert first.paths[:3] == ("0000045/001.jpg", "0000045/002.jpg", "0000099/001.jpg")
    assert first.paths[3:5] == ("Aaron/a.jpeg", "Aaron/b.PNG")  # extension case-insensitive
    assert first.labels == (0, 0, 1, 2, 2, 3)
    for other in indexes[1:]:
        assert (other.paths, other.labels, other.classes) == (
            first.paths,
            first.labels,
            first.classes,
        )
    assert first.absolute(0) == tmp_path / "r1" / "0000045" / "001.jpg"


def test_hidden_empty_and_other_entries_are_skipped_and_counted(tmp_path: Path) -> None:
    _make(tmp_path, 0)
    (tmp_path / ".cache").mkdir()
    (tmp_path / "Aaron" / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "empty_id").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "notes.txt").write_text("x")
    (tmp_path / "README.md").write_text("x")
    index = scan_image_folder(tmp_path)
    assert index.classes == ("0000045", "0000099", "Aaron", "zed")
    assert (index.skipped_hidden, index.skipped_empty, index.skipped_other) == (2, 2, 2)
    assert len(index) == 6
    only_png = scan_image_folder(tmp_path, extensions=(".png",))
    assert only_png.paths == ("Aaron/b.PNG",) and only_png.classes == ("Aaron",)


def test_empty_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no images"):
        scan_image_folder(tmp_path)
    with pytest.raises(DataFormatError, match="not a folder"):
        scan_image_folder(tmp_path / "missing")


def test_label_map_round_trip_and_extension(tmp_path: Path) -> None:
    _make(tmp_path / "data", 0)
    index = scan_image_folder(tmp_path / "data")
    write_label_map(tmp_path / "labels.tsv", index.label_map)
    text = (tmp_path / "labels.tsv").read_text()
    assert text == "0\t0000045\n1\t0000099\n2\tAaron\n3\tzed\n"
    saved = read_label_map(tmp_path / "labels.tsv")
    assert saved == index.label_map
    write_label_map(tmp_path / "again.tsv", saved)
    assert (tmp_path / "again.tsv").read_bytes() == (tmp_path / "labels.tsv").read_bytes()

    # new identities sort before and between old ones, yet old labels stay put
    for ident in ("0000001", "Bob"):
        (tmp_path / "data" / ident).mkdir()
        (tmp_path / "data" / ident / "1.jpg").write_bytes(b"img")
    grown = scan_image_folder(tmp_path / "data", label_map=saved)
    assert grown.classes == ("0000045", "0000099", "Aaron", "zed", "0000001", "Bob")
    assert dict(zip(grown.paths, grown.labels, strict=True))["0000001/1.jpg"] == 4
    assert dict(zip(grown.paths, grown.labels, strict=True))["zed/x.bmp"] == 3
    assert extend_label_map(saved, ["zed", "c", "b"]) == {**saved, "b": 4, "c": 5}
    with pytest.raises(ValueError, match=r"0\.\.C-1"):
        extend_label_map({"a": 0, "b": 2}, [])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0\ta\n2\tb\n", r"labels\.tsv:2: expected label 1"),
        ("0\ta\n1 b\n", r"labels\.tsv:2: expected '<label>\\t<identity>'"),
        ("0\ta\n1\ta\n", r"labels\.tsv:2: identity 'a' listed twice"),
    ],
)
def test_malformed_label_map(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "labels.tsv").write_text(text)
    with pytest.raises(DataFormatError, match=match):
        read_label_map(tmp_path / "labels.tsv")
