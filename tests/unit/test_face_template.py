"""Similarity alignment: exact recovery of known transforms, warps land on the template."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from arcflow.face_template import (
    ARCFACE_TEMPLATE,
    TEMPLATE_112X96,
    alignment_matrix,
    alignment_residual,
    estimate_similarity,
    template_for,
    warp_face,
)

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


# -- crop-size variants (insightface's estimate_norm rule) ------------------------------------

#: The 112x96 template as insightface/SphereFace publish it.
PUBLISHED_112X96 = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ]
)

#: (height, width) of every crop geometry under test; width None means square.
CROPS = [(112, None), (224, None), (128, None), (256, None), (112, 96)]


def test_template_112x96() -> None:
    np.testing.assert_allclose(template_for(112, 96), PUBLISHED_112X96, atol=1e-12)
    np.testing.assert_allclose(TEMPLATE_112X96, PUBLISHED_112X96, atol=1e-12)
    np.testing.assert_allclose(template_for(224, 192), PUBLISHED_112X96 * 2, atol=1e-12)
    np.testing.assert_array_equal(template_for(112, 112), template_for(112))


def test_template_128_rule_centres_the_112_face() -> None:
    shift = np.array([8.0, 0.0])
    np.testing.assert_allclose(template_for(128), ARCFACE_TEMPLATE + shift)
    np.testing.assert_allclose(template_for(256), (ARCFACE_TEMPLATE + shift) * 2)
    np.testing.assert_allclose(template_for(896), ARCFACE_TEMPLATE * 8)  # 112 rule first
    for bad in [(100, None), (0, None), (112, 100), (128, 96), (96, 96)]:
        with pytest.raises(ValueError):
            template_for(*bad)


@pytest.mark.parametrize(("size", "width"), CROPS)
def test_warp_face_crop_shape_and_black_border(size: int, width: int | None) -> None:
    image = np.full((60, 60, 3), 200, np.uint8)
    landmarks = ARCFACE_TEMPLATE * 0.3 + 40  # a small face at the bottom-right edge
    crop = warp_face(image, landmarks, size, width)
    assert crop.shape == (size, width or size, 3) and crop.dtype == np.uint8
    assert crop[0, 0].tolist() == [200] * 3  # inside the frame
    assert crop[-1, -1].tolist() == [0, 0, 0]  # past its edge


def _random_landmarks(rng: np.random.Generator) -> np.ndarray:
    """The template under a random similarity, plus a few px of independent noise."""
    truth = _similarity(rng.uniform(0.5, 3), rng.uniform(-np.pi, np.pi), *rng.uniform(0, 200, 2))
    return ARCFACE_TEMPLATE @ truth[:, :2].T + truth[:, 2] + rng.normal(0, 3, (5, 2))


def _lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: solve x' = a x - b y + tx, y' = b x + a y + ty by least squares."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [([x, -y, 1, 0], u), ([y, x, 0, 1], v)]
    a_mat = np.array([r[0] for r in rows], dtype=np.float64)
    (a, b, tx, ty), *_ = np.linalg.lstsq(a_mat, np.array([r[1] for r in rows]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


@pytest.mark.parametrize(("size", "width"), CROPS)
def test_estimate_similarity_matches_independent_least_squares(
    size: int, width: int | None
) -> None:
    rng = np.random.default_rng(size + (width or 0))
    for _ in range(50):
        lm = _random_landmarks(rng)
        ref = _lstsq_similarity(lm, template_for(size, width))
        np.testing.assert_allclose(alignment_matrix(lm, size, width), ref, atol=1e-9)


def _skimage_params(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    transform = pytest.importorskip("skimage.transform")
    similarity = transform.SimilarityTransform
    if hasattr(similarity, "from_estimate"):  # scikit-image >= 0.26
        tform = similarity.from_estimate(src, dst)
        assert tform, "skimage failed to estimate"
    else:
        tform = similarity()
        assert tform.estimate(src, dst)
    return tform.params[:2]


@pytest.mark.parametrize(("size", "width"), CROPS)
def test_parity_with_skimage_estimate_and_cv2_warp(size: int, width: int | None) -> None:
    """insightface's estimate_norm + norm_crop: skimage's estimate, then cv2.warpAffine."""
    rng = np.random.default_rng(1000 + size + (width or 0))
    frame = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
    for _ in range(50):
        lm = _random_landmarks(rng)
        params = _skimage_params(lm, template_for(size, width))
        np.testing.assert_allclose(
            estimate_similarity(lm, template_for(size, width)), params, atol=1e-9
        )
        expected = cv2.warpAffine(frame, params, (width or size, size), borderValue=0)
        np.testing.assert_array_equal(warp_face(frame, lm, size, width), expected)


# -- alignment residual -----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "width"), CROPS)
def test_residual_is_zero_for_template_shaped_points(size: int, width: int | None) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        truth = _similarity(
            rng.uniform(0.2, 5), rng.uniform(-np.pi, np.pi), *rng.uniform(-50, 300, 2)
        )
        landmarks = ARCFACE_TEMPLATE @ truth[:, :2].T + truth[:, 2]
        assert alignment_residual(landmarks, size, width) < 1e-9


def test_residual_flags_distorted_sets() -> None:
    truth = _similarity(1.4, 0.3, 20.0, 10.0)
    good = ARCFACE_TEMPLATE @ truth[:, :2].T + truth[:, 2]
    swapped = good[[1, 0, 2, 3, 4]]  # eyes swapped (a mirrored detection)
    assert alignment_residual(swapped) > 3
    nose_off = good.copy()
    nose_off[2] += [25.0, 0.0]
    assert alignment_residual(nose_off) > 3
    assert alignment_residual(good + np.random.default_rng(3).normal(0, 0.5, (5, 2))) < 3
    # residual is in crop pixels: it doubles with the crop
    assert alignment_residual(nose_off, 224) == pytest.approx(2 * alignment_residual(nose_off))
    nan = good.copy()
    nan[0, 0] = np.nan
    assert alignment_residual(nan) == float("inf")
    with pytest.raises(ValueError, match="5"):
        alignment_residual(good[:4])
