"""Aligning an image-folder dataset with the offline detector, on real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from arcflow.align.detectors import get_detector
from arcflow.align.folder import align_image_folder
from arcflow.align.template import ARCFACE_TEMPLATE
from arcflow.data.recordio import FaceRecordDataset
from arcflow.errors import DataFormatError
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
    report = align_image_folder(folder, out, mtcnn, batch_size=2, max_bad_fraction=0.5)
    assert report.to_dict() == {
        "total": 4, "aligned": 2, "failed": 2,
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
        align_image_folder(folder, tmp_path / "out", mtcnn, max_bad_fraction=0.25)


def test_nothing_aligned_names_the_reason(tmp_path: Path, mtcnn) -> None:
    (tmp_path / "faces" / "carol").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "faces" / "carol" / "wall.png"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(DataFormatError, match=r"1 of 1 images could not be aligned.*no face"):
        align_image_folder(tmp_path / "faces", tmp_path / "out", mtcnn, max_bad_fraction=1.0)


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
    assert sorted(line.split("\t")[0] for line in failures) == ["corrupt", "no_face"]
    assert any("bob/broken.jpg" in line for line in failures)
    assert (out / "property").read_text() == "2,112,112\n"

    params = _params(repo_root, tmp_path, detector="annotations")
    proc = run_stage("align", "--params", params, "--raw", folder, "--out", tmp_path / "x")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "set align.detector to mtcnn" in proc.stderr
