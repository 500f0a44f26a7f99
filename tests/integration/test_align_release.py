"""Aligning a release tolerates a few undecodable images, counts them, fails above a fraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arcflow.align.release import align_training_split
from arcflow.data.recordio import (
    IRHeader,
    RecordReader,
    RecordWriter,
    pack,
    read_face_dataset_index,
    unpack,
)
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.integration


def _corrupt(src: Path, dst: Path, positions: set[int]) -> None:
    """Copy a release .rec, replacing the JPEG of the records at ``positions`` with junk."""
    with RecordReader(src) as reader, RecordWriter(dst, dst.with_suffix(".idx")) as writer:
        for position, payload in enumerate(reader):
            header, jpeg = unpack(payload)
            if position in positions:
                jpeg = b"\xff\xd8 not really a jpeg"
            writer.write(pack(IRHeader(header.flag, header.label, header.id, header.id2), jpeg))


def test_bad_images_are_counted_and_skipped(tiny_release: Path, tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    _corrupt(tiny_release / "train.rec", rec, {1})
    report = align_training_split(rec, tmp_path / "out", max_bad_fraction=0.1)
    assert report.to_dict() == {
        "total": 24,
        "aligned": 23,
        "failed": 1,
        "failed_by_reason": {"corrupt": 1},
    }
    assert "record 1" in report.failed[0]
    classes, keys, labels = read_face_dataset_index(tmp_path / "out")
    assert (classes, len(keys)) == (6, 23)
    assert np.bincount(labels).tolist() == [3, 4, 4, 4, 4, 4]


def test_whole_identity_lost_keeps_labels_contiguous(tiny_release: Path, tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    _corrupt(tiny_release / "train.rec", rec, {4, 5, 6, 7})  # identity 1's four images
    report = align_training_split(rec, tmp_path / "out", max_bad_fraction=0.2)
    assert report.aligned == 20
    classes, _keys, labels = read_face_dataset_index(tmp_path / "out")
    assert classes == 5 and sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]


def test_too_many_bad_images_fail(tiny_release: Path, tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    _corrupt(tiny_release / "train.rec", rec, {0, 9})
    with pytest.raises(DataFormatError, match=r"2 of 24 images could not be aligned") as err:
        align_training_split(rec, tmp_path / "out", max_bad_fraction=0.05)
    assert "max_bad_fraction=0.05" in str(err.value) and "record 0" in str(err.value)
