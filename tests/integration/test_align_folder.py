"""Aligning with the offline detector, on real photos: an image-folder training set, and an
evaluation set without annotations (every image must give a crop: centre crop when no face)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from arcflow.align.dataset import align_dataset
from arcflow.align.detectors import get_detector
from arcflow.config import AlignParams
from arcflow.data.face_records import FaceRecordDataset
from arcflow.data.imageset import ImageSet
from arcflow.errors import DataFormatError
from arcflow.face_template import ARCFACE_TEMPLATE
from tests.photos import insightface_photos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mtcnn():
    return get_detector("mtcnn", device="cpu")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """alice: the group photo; bob: a portrait and a corrupt file; carol: no face at all."""
    photos = insightface_photos()
    root = tmp_path / "faces"
    for person in ("alice", "bob", "carol"):
        (root / person).mkdir(parents=True)
    shutil.copy(photos["t1.jpg"], root / "alice" / "t1.jpg")
    shutil.copy(photos["Tom_Hanks_54745.png"], root / "bob" / "portrait.png")
    (root / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cv2.imwrite(str(root / "carol" / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
    return root


def test_aligns_detected_faces_and_reports_failures(folder: Path, tmp_path: Path, mtcnn) -> None:
    out = tmp_path / "aligned"
    cfg = AlignParams(detector="mtcnn", detect_batch=2, max_bad_fraction=0.5)
    result = align_dataset(folder, out, cfg)
    assert result is not None
    assert result.reports["train"].to_dict() == {
        "total": 4, "aligned": 2, "centre_crops": 0, "failed": 2,
        "failed_by_reason": {"corrupt": 1, "no_face": 1},
    }  # fmt: skip
    with FaceRecordDataset(out) as records:
        assert records.num_classes == 2 and len(records) == 2  # carol lost all her images
        labels = [records[i][0] for i in range(2)]
        crops = [cv2.imdecode(np.frombuffer(records[i][1], np.uint8), 1) for i in range(2)]
    assert labels == [0, 1]
    for crop in crops:  # the detector finds the aligned face where the template expects it
        found = mtcnn.detect([crop])[0]
        assert len(found) >= 1
        error = np.linalg.norm(found.landmarks[0] - ARCFACE_TEMPLATE, axis=1)
        # eyes land on the template's eyes; nose and mouth move with a turned head (pose)
        assert error[:2].max() < 8.0 and error.max() < 15.0


def test_too_many_failures_fail(folder: Path, tmp_path: Path, mtcnn) -> None:
    with pytest.raises(DataFormatError, match=r"2 of 4 images could not be aligned"):
        align_dataset(
            folder, tmp_path / "out", AlignParams(detector="mtcnn", max_bad_fraction=0.25)
        )


def test_nothing_aligned_names_the_reason(tmp_path: Path, mtcnn) -> None:
    (tmp_path / "faces" / "carol").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "faces" / "carol" / "wall.png"), np.zeros((64, 64, 3), np.uint8))
    cfg = AlignParams(detector="mtcnn", max_bad_fraction=1.0)
    with pytest.raises(DataFormatError, match=r"faces: no image could be aligned"):
        align_dataset(tmp_path / "faces", tmp_path / "out", cfg)


def _params(repo_root: Path, tmp_path: Path, **align: object) -> Path:
    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["align"].update(align)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_aligns_a_folder_with_the_offline_detector(
    repo_root: Path, folder: Path, tmp_path: Path
) -> None:
    import json

    from tests.conftest import run_stage

    params = _params(repo_root, tmp_path, detector="mtcnn", max_bad_fraction=0.5)
    out, metrics = tmp_path / "aligned", tmp_path / "align.json"
    proc = run_stage(
        "align",
        "--params",
        params,
        "--raw",
        folder,
        "--out",
        out,
        "--metrics",
        metrics,
        "--failures",
        tmp_path / "failures.tsv",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(metrics.read_text())["train"]["failed_by_reason"] == {
        "corrupt": 1,
        "no_face": 1,
    }
    failures = (tmp_path / "failures.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in failures) == ["corrupt", "no_face"]
    assert any("bob/broken.jpg" in line for line in failures)
    assert (out / "property").read_text() == "2,112,112\n"

    params = _params(repo_root, tmp_path, detector="annotations")
    proc = run_stage("align", "--params", params, "--raw", folder, "--out", tmp_path / "x")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "set align.detector to retinaface_mnet" in proc.stderr


def _ytf_without_annotations(root: Path) -> Path:
    """A YTF-layout set with no 5-point file: a portrait, the group photo and a blank frame."""
    photos = insightface_photos()
    video = root / "ytf" / "frame_images_DB" / "someone" / "0"
    video.mkdir(parents=True)
    (root / "ytf" / "splits.txt").write_text("split number, pair number, first name, ...\n")
    shutil.copy(photos["Tom_Hanks_54745.png"], video / "0.1.png")
    shutil.copy(photos["t1.jpg"], video / "0.2.jpg")
    cv2.imwrite(str(video / "0.3.jpg"), np.full((120, 90, 3), 128, np.uint8))
    return root


def test_evaluation_set_without_annotations_is_detected_or_centre_cropped(
    folder: Path, tmp_path: Path, mtcnn
) -> None:
    (folder / "bob" / "broken.jpg").unlink()
    raw = _ytf_without_annotations(folder)
    train, evals = tmp_path / "train", tmp_path / "eval"
    cfg = AlignParams(detector="mtcnn", max_bad_fraction=0.5)
    result = align_dataset(raw, train, cfg, eval_out=evals)
    assert result is not None
    assert result.reports["ytf"].to_dict() == {
        "total": 3, "aligned": 3, "centre_crops": 1, "failed": 0, "failed_by_reason": {},
    }  # fmt: skip
    with ImageSet(evals / "sets" / "ytf") as ytf:
        video = "frame_images_DB/someone/0"
        assert ytf.names == [f"{video}/0.1.png", f"{video}/0.2.jpg", f"{video}/0.3.jpg"]
        portrait = cv2.imdecode(np.frombuffer(ytf.crop(ytf.names[0]), np.uint8), 1)
        blank = cv2.imdecode(np.frombuffer(ytf.crop(ytf.names[2]), np.uint8), 1)
    found = mtcnn.detect([portrait])[0]
    assert len(found) == 1
    assert np.linalg.norm(found.landmarks[0, :2] - ARCFACE_TEMPLATE[:2], axis=1).max() < 8.0
    # the centre crop of a 90x120 grey frame: its central 90x90 square, resized, all grey
    # (the last row and column blend with the border)
    assert blank.shape == (112, 112, 3)
    assert np.abs(blank[:-1, :-1].astype(int) - 128).max() <= 2


def test_undecodable_evaluation_image_fails_naming_it(folder: Path, tmp_path: Path) -> None:
    raw = _ytf_without_annotations(folder)
    (raw / "ytf" / "frame_images_DB" / "someone" / "0" / "0.2.jpg").write_bytes(b"")
    cfg = AlignParams(detector="mtcnn", max_bad_fraction=1.0)
    with pytest.raises(DataFormatError, match=r"every image of an evaluation set") as err:
        align_dataset(raw, tmp_path / "train", cfg, eval_out=tmp_path / "eval")
    assert "0.2.jpg: empty" in str(err.value)
    assert not (tmp_path / "train").exists() and not (tmp_path / "eval").exists()


def test_stage_handles_or_rejects_every_kind_of_bad_image(repo_root: Path, tmp_path: Path) -> None:
    """Grey, RGBA and 16-bit photos are aligned; empty, corrupt and bomb files are rejected
    one by one with their reason; the stage finishes and reports them."""
    import json
    import struct

    from tests.conftest import run_stage

    portrait = cv2.imread(str(insightface_photos()["Tom_Hanks_54745.png"]))
    root = tmp_path / "faces" / "tom"
    root.mkdir(parents=True)
    cv2.imwrite(str(root / "colour.jpg"), portrait)
    cv2.imwrite(str(root / "grey.png"), cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY))
    alpha = np.full(portrait.shape[:2], 255, np.uint8)
    cv2.imwrite(str(root / "rgba.png"), np.dstack([portrait, alpha]))
    cv2.imwrite(str(root / "deep.png"), portrait.astype(np.uint16) * 257)  # 16-bit samples
    (root / "empty.jpg").write_bytes(b"")
    jpeg = (root / "colour.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bomb = bytearray(jpeg)
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # 3.6 G pixels declared
    (root / "bomb.jpg").write_bytes(bytes(bomb))

    params = _params(repo_root, tmp_path, detector="mtcnn", max_bad_fraction=0.5)
    out, metrics, failures = tmp_path / "aligned", tmp_path / "align.json", tmp_path / "f.tsv"
    args = ("--raw", tmp_path / "faces", "--out", out, "--metrics", metrics, "--failures", failures)
    proc = run_stage("align", "--params", params, *args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(metrics.read_text())["train"] == {
        "total": 7, "aligned": 4, "centre_crops": 0, "failed": 3,
        "failed_by_reason": {"corrupt": 1, "empty": 1, "too_large": 1},
    }  # fmt: skip
    reasons = {line.split("\t")[2].split(":")[0]: line.split("\t")[1]
               for line in failures.read_text().splitlines()}  # fmt: skip
    assert reasons == {
        str(root / "bomb.jpg"): "too_large",
        str(root / "empty.jpg"): "empty",
        str(root / "truncated.jpg"): "corrupt",
    }
    with FaceRecordDataset(out) as records:
        assert len(records) == 4  # colour, grey, RGBA and 16-bit: the same face each time
        crops = [cv2.imdecode(np.frombuffer(records[i][1], np.uint8), 1) for i in range(4)]
    for crop in crops[1:]:
        assert np.abs(crop.astype(int) - crops[0].astype(int)).mean() < 12
