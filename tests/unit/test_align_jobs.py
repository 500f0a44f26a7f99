"""Which images the align stage finds in a release, and the splitting of the work."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcflow.align.jobs import EVAL_LAYOUTS, AlignJob, Item, eval_jobs, image_files
from arcflow.align.shards import plan
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_image_files_are_sorted_and_skip_hidden_and_other_files(tmp_path: Path) -> None:
    for name in ("b/2.JPG", "a/10.png", "a/9.jpg", ".hidden/1.jpg", "a/.x.jpg", "a/notes.txt"):
        _touch(tmp_path / name)
    assert image_files(tmp_path) == ["a/10.png", "a/9.jpg", "b/2.JPG"]


def test_sets_are_found_by_their_protocol_file(tmp_path: Path) -> None:
    _touch(tmp_path / "ytf" / "frame_images_DB" / "p" / "0" / "0.1.jpg")
    assert eval_jobs(tmp_path) == []  # frames without splits.txt are not the YTF benchmark
    _touch(tmp_path / "ytf" / "splits.txt")
    (job,) = eval_jobs(tmp_path)
    assert (job.name, job.output, job.complete, job.needs_detector) == ("ytf", "set", True, True)
    assert job.items == (Item("frame_images_DB/p/0/0.1.jpg"),)


def test_annotated_set_lists_the_annotated_images(tmp_path: Path) -> None:
    meta = tmp_path / "ijb" / "IJBC" / "meta"
    _touch(meta / "ijbc_template_pair_label.txt")
    points = " ".join(["1.000"] * 10)
    _touch(meta / "ijbc_name_5pts_score.txt", f"2.jpg {points} 0.9\n1.jpg {points} 1.0\n".encode())
    (job,) = eval_jobs(tmp_path)
    assert job.root == tmp_path / "ijb" / "IJBC" / "loose_crop"
    assert [item.ref for item in job.items] == ["2.jpg", "1.jpg"]  # file order
    assert job.items[0].landmarks == (1.0,) * 10 and not job.needs_detector


@pytest.mark.parametrize("name", ["../escape.jpg", "/etc/passwd", "a\\b.jpg"])
def test_names_must_stay_inside_the_set(tmp_path: Path, name: str) -> None:
    meta = tmp_path / "ijb" / "IJBC" / "meta"
    _touch(meta / "ijbc_template_pair_label.txt")
    points = " ".join(["1.000"] * 10)
    _touch(meta / "ijbc_name_5pts_score.txt", f"{name} {points} 1.0\n".encode())
    with pytest.raises(DataFormatError, match="must be a relative path inside it"):
        eval_jobs(tmp_path)


def test_every_layout_has_a_distinct_name_and_marker() -> None:
    assert len({layout.name for layout in EVAL_LAYOUTS}) == len(EVAL_LAYOUTS)
    assert len({layout.marker for layout in EVAL_LAYOUTS}) == len(EVAL_LAYOUTS)


def test_shards_cover_every_image_once(tmp_path: Path) -> None:
    job = AlignJob("train", tmp_path, tuple(Item(i) for i in range(10)), "train")
    shards = plan(job, 4)
    assert [(s.index, s.start, s.stop) for s in shards] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    assert [s.stem for s in shards] == ["shard-00000", "shard-00001", "shard-00002"]
