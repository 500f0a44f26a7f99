"""``dataset.json``: which dataset the aligned sets come from, read from hostile files safely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arcflow.data.dataset_label import dataset_label, read_dataset_label, write_dataset_label
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit


def test_synthface_is_named_and_marked_synthetic(tmp_path: Path) -> None:
    raw, out = tmp_path / "synthface", tmp_path / "eval"
    raw.mkdir()
    (raw / "meta.json").write_text(json.dumps({"dataset": "synthface", "lfw": {}}))
    write_dataset_label(raw, out)
    assert read_dataset_label(out) == {
        "dataset": "synthface",
        "source": "synthface",
        "synthetic": True,
    }


@pytest.mark.parametrize(
    "meta",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"dataset": "../../etc"}).encode(),
        json.dumps({"dataset": 7}).encode(),
        b"\xff\xfe",
    ],
)
def test_a_release_whose_meta_says_nothing_usable_is_named_by_its_folder(
    tmp_path: Path, meta: bytes
) -> None:
    raw = tmp_path / "casia"
    raw.mkdir()
    (raw / "meta.json").write_bytes(meta)
    assert dataset_label(raw) == {"dataset": "casia", "source": "casia", "synthetic": False}


def test_an_oversized_meta_is_not_read(tmp_path: Path) -> None:
    raw = tmp_path / "casia"
    raw.mkdir()
    (raw / "meta.json").write_text(json.dumps({"dataset": "synthface", "pad": "x" * (1 << 20)}))
    assert dataset_label(raw)["dataset"] == "casia"


def test_no_label_is_none_and_a_broken_one_is_one_error(tmp_path: Path) -> None:
    assert read_dataset_label(tmp_path) is None
    (tmp_path / "dataset.json").write_text('{"dataset": ')
    with pytest.raises(DataFormatError, match=r"dataset\.json: not JSON"):
        read_dataset_label(tmp_path)
    (tmp_path / "dataset.json").write_text('["synthface"]')
    with pytest.raises(DataFormatError, match="expected an object with a 'dataset' name"):
        read_dataset_label(tmp_path)
