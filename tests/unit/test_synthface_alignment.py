"""SynthFace crops aligned from ground-truth landmarks put each landmark exactly where the
alignment sends it: the painted marker discs land within 1 px of the warped landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from arcflow.data.synthface import render
from arcflow.data.synthface_identity import identity_params
from arcflow.data.synthface_parts import MARKER_COLORS
from arcflow.face_template import alignment_matrix, warp_face

pytestmark = pytest.mark.unit


def _blob_centre(crop: np.ndarray, colour: tuple[int, int, int], near: np.ndarray) -> np.ndarray:
    """Centroid of the pixels close to ``colour`` (BGR) within 10 px of ``near``."""
    distance = np.abs(crop.astype(int) - np.array(colour)).sum(axis=2)
    weight = np.clip(1.0 - distance / 150.0, 0.0, None)
    ys, xs = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    weight[np.hypot(xs - near[0], ys - near[1]) > 10] = 0.0  # ignore look-alike clutter
    assert weight.sum() > 0.5, f"marker {colour} not found near {near}"
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("identity", [0, 7, 42])
def test_markers_land_on_the_warped_landmarks(identity: int) -> None:
    for j in range(4):
        rng = np.random.default_rng([5, identity, j])
        frame, landmarks = render(identity_params(5, identity), rng, 160, markers=True)
        size = 224  # larger crops: the 2.5 px discs stay a few pixels wide after the warp
        crop = warp_face(frame, landmarks, size)
        matrix = alignment_matrix(landmarks, size)
        expected = landmarks @ matrix[:, :2].T + matrix[:, 2]
        for point, colour in zip(expected, MARKER_COLORS, strict=True):
            found = _blob_centre(crop, colour, point)
            assert np.linalg.norm(found - point) < 1.0, (identity, j, colour, found, point)
