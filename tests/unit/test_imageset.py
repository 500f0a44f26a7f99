"""Aligned image sets: crops by name round-trip; broken sets are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcflow.data.imageset import ImageSet, write_image_set
from arcflow.data.recordio import RecordReader, unpack
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit

CROPS = [("a/1.jpg", b"\xff\xd8one"), ("b/2.jpg", b"\xff\xd8two"), ("c d/3.png", b"three")]


def test_round_trip_by_name_and_position(tmp_path: Path) -> None:
    assert write_image_set(tmp_path / "ijbc", CROPS) == 3
    with ImageSet(tmp_path / "ijbc") as images:
        assert len(images) == 3 and images.names == [name for name, _ in CROPS]
        assert images.crop("b/2.jpg") == b"\xff\xd8two" and images.crop_at(2) == b"three"
        assert "a/1.jpg" in images and "zzz" not in images
        with pytest.raises(DataFormatError, match="no image named 'zzz'"):
            images.crop("zzz")
    # insightface's record layout: label = position
    with RecordReader(tmp_path / "ijbc.rec") as reader:
        header, jpeg = unpack(reader.read(1))
    assert (header.flag, header.label, jpeg) == (0, 1.0, b"\xff\xd8two")


@pytest.mark.parametrize("bad", ["a/1.jpg", "x\ny.jpg"])
def test_duplicate_or_multiline_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="duplicated or has a line break"):
        write_image_set(tmp_path / "s", [*CROPS, (bad, b"x")])
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_names_and_records_must_agree(tmp_path: Path) -> None:
    write_image_set(tmp_path / "s", CROPS)
    (tmp_path / "s.names").write_text("a/1.jpg\n")
    with pytest.raises(DataFormatError, match=r"s.names: 1 names but .*s.rec holds 3 records"):
        ImageSet(tmp_path / "s")
