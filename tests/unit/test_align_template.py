"""Similarity alignment: exact recovery of known transforms, warps land on the template."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from arcflow.align.template import ARCFACE_TEMPLATE, estimate_similarity, template_for, warp_face

pytestmark = pytest.mark.unit


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_recovers_known_similarity() -> None:
    truth = _similarity(1.7, 0.4, -12.0, 30.5)
    src = ARCFACE_TEMPLATE + np.random.default_rng(0).normal(0, 5, size=(5, 2))
    dst = src @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(estimate_similarity(src, dst), truth, atol=1e-9)


def test_least_squares_matches_closed_form_on_noisy_points() -> None:
    """Umeyama's solution minimises the squared error: no perturbation does better."""
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    dst = rng.uniform(0, 100, size=(5, 2))
    m = estimate_similarity(src, dst)

    def err(mat: np.ndarray) -> float:
        return float(((src @ mat[:, :2].T + mat[:, 2] - dst) ** 2).sum())

    a, b = m[0, 0], m[1, 0]
    for da, db in [(1e-3, 0), (0, 1e-3), (-1e-3, 0), (0, -1e-3)]:
        mat = m.copy()
        mat[:, :2] = [[a + da, -(b + db)], [b + db, a + da]]
        assert err(mat) >= err(m)


def test_no_reflection() -> None:
    mirrored = ARCFACE_TEMPLATE * [-1, 1]
    m = estimate_similarity(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_warp_moves_marked_points_onto_template() -> None:
    truth = _similarity(1.3, -0.3, 40.0, 25.0)
    landmarks = ARCFACE_TEMPLATE @ truth[:, :2].T + truth[:, 2]
    image = np.zeros((220, 220, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = warp_face(image, landmarks, 112)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[round(y), round(x)].min() > 100


def test_template_scales_with_crop_size() -> None:
    np.testing.assert_allclose(template_for(224), ARCFACE_TEMPLATE * 2)
    with pytest.raises(ValueError, match="multiple of 112"):
        template_for(100)
