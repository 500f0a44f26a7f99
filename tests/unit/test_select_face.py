"""Choosing the face to align, and the centre-crop fallback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from arcflow.align.select import centre_crop_landmarks, pick_face
from arcflow.face_template import warp_face

pytestmark = pytest.mark.unit

# a central face (score 0.80) and a more confident one at the left edge (0.95), 400x300 image
BOXES = np.array([[170, 120, 230, 180], [0, 120, 60, 180]], dtype=np.float32)
SCORES = np.array([0.80, 0.95], dtype=np.float32)


def test_confidence_alone_picks_the_edge_face() -> None:
    assert pick_face(BOXES, SCORES, 400, 300, centre_weight=0.0) == 1


def test_centre_weight_prefers_the_central_face() -> None:
    # edge face: distance 170/250 = 0.68 -> 0.95 * (1 - 0.5 * 0.68) = 0.627 < 0.80
    assert pick_face(BOXES, SCORES, 400, 300, centre_weight=0.5) == 0


def test_no_face_above_threshold() -> None:
    assert pick_face(BOXES, SCORES, 400, 300, min_score=0.99) is None
    assert pick_face(np.zeros((0, 4)), np.zeros(0), 400, 300) is None
    assert pick_face(BOXES, SCORES, 400, 300, min_score=0.9, centre_weight=1.0) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        pick_face(BOXES, SCORES[:1], 400, 300)
    with pytest.raises(ValueError, match="centre_weight"):
        pick_face(BOXES, SCORES, 400, 300, centre_weight=2.0)


def test_centre_crop_fallback_is_a_resized_centre_square() -> None:
    y, x = np.mgrid[0:300, 0:400].astype(np.float32)
    smooth = 127 + 60 * np.sin(x / 23.0) + 60 * np.cos(y / 17.0)
    image = np.dstack([smooth, smooth[::-1], smooth[:, ::-1]]).astype(np.uint8)
    crop = warp_face(image, centre_crop_landmarks(400, 300), 112)
    expected = cv2.resize(image[:, 50:350], (112, 112), interpolation=cv2.INTER_AREA)
    assert crop.shape == (112, 112, 3)
    # the same picture up to resampling (warpAffine samples, resize averages)
    assert np.abs(crop.astype(int) - expected.astype(int)).mean() < 4
    assert np.abs(crop.astype(int) - cv2.resize(image, (112, 112)).astype(int)).mean() > 10
    corners = centre_crop_landmarks(400, 300)
    assert corners.min() >= 0 and corners[:, 0].max() <= 350 and corners[:, 1].max() <= 300
