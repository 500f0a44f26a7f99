"""Attack: a train.rec whose labels or header0 lie (negative, NaN, fractional, huge labels; a
header0 range far past the index; a property that disagrees). Each is one DataFormatError naming
the file, the record and the value, before anything is allocated by it or trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arcflow.data.face_records import read_face_dataset_index
from arcflow.data.recordio import IRHeader, RecordWriter, pack
from arcflow.errors import DataFormatError

pytestmark = [pytest.mark.attack, pytest.mark.unit]

JPEG = b"\xff\xd8\xff\xd9"


def _rec(folder: Path, labels: list[float], header0: tuple[float, float] | None = None) -> Path:
    """Image records 1..n with ``labels`` (then header0 and one record per identity)."""
    folder.mkdir(parents=True, exist_ok=True)
    with RecordWriter(folder / "train.rec", folder / "train.idx") as writer:
        if header0 is not None:
            writer.write(pack(IRHeader(2, header0, 0, 0)), key=0)
        for key, label in enumerate(labels, start=1):
            writer.write(pack(IRHeader(0, label, key, 0), JPEG), key=key)
        if header0 is not None:
            for key in range(len(labels) + 1, len(labels) + 3):
                writer.write(pack(IRHeader(2, (1.0, 2.0), key, 0)), key=key)
    return folder


GOOD = [0.0, 0.0, 1.0, 1.0]
ATTACKS = {  # name -> (labels, header0, property, what the error says)
    "negative label": ([0.0, -1.0, 1.0, 1.0], (5, 7), None, "record 2: label -1.0"),
    "nan label": ([0.0, float("nan"), 1.0, 1.0], (5, 7), None, "record 2: label nan"),
    "fractional label": ([0.0, 0.5, 1.0, 1.0], (5, 7), None, "record 2: label 0.5"),
    "label past the classes": ([0.0, 0.0, 1.0, 7.0], (5, 7), None, "record 4: label 7.0"),
    "huge label, no header0": ([0.0, 3e9, 1.0, 1.0], None, "2,112,112", "label 3000000000.0"),
    "header0 past the index": (GOOD, (16_000_000, 16_000_002), None, "header0 range"),
    "header0 not integers": (GOOD, (5.5, 7), None, "not two integers"),
    "property disagrees": (GOOD, (5, 7), "1000,112,112", "1000 classes, but header0"),
    "property nonsense": (GOOD, (5, 7), "-3,112,112", "out of range"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_lying_labels_are_one_error_naming_file_record_and_value(
    attack: str, tmp_path: Path
) -> None:
    labels, header0, prop, message = ATTACKS[attack]
    folder = _rec(tmp_path / "rec", labels, header0)
    if prop is not None:
        (folder / "property").write_text(prop + "\n")
    with pytest.raises(DataFormatError, match=r"train\.rec|property") as err:
        read_face_dataset_index(folder)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_same_layout_with_honest_labels_reads(tmp_path: Path) -> None:
    num_classes, keys, labels = read_face_dataset_index(_rec(tmp_path / "rec", GOOD, (5, 7)))
    assert num_classes == 2 and keys.tolist() == [1, 2, 3, 4]
    assert labels.tolist() == [0, 0, 1, 1] and labels.dtype == np.int64
