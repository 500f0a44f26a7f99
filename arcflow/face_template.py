"""The ArcFace 5-point template, its crop-size variants, and the similarity warp onto it.

Crop geometry follows insightface's ``face_align.estimate_norm``; for a crop ``size`` pixels
high (and as wide, unless noted):

- ``size`` a multiple of 112: the 112x112 template scaled by ``size / 112``;
- otherwise ``size`` a multiple of 128: the template scaled by ``size / 128`` and shifted
  right by ``8 * size / 128`` px, i.e. the 112-px face centred in a 128-px crop (a size that
  is a multiple of both, e.g. 896, takes the 112 rule, as insightface's does);
- ``width = size * 96 / 112`` with ``size`` a multiple of 112 (112x96, the SphereFace/CosFace
  crop insightface also ships): the template scaled by ``size / 112`` and shifted left by
  ``8 * size / 112`` px, i.e. the 112-px face centred in a 96-px-wide crop.

insightface stores the template as float32; here it is float64 (the differences are < 1e-5
px). Points are ``(x, y)`` in pixels; a crop is ``size`` rows by ``width`` columns.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Eye centres, nose tip, mouth corners of the canonical 112x112 ArcFace crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: The 112x112 template shifted by -8 px in x: the 112 (high) x 96 (wide) crop.
TEMPLATE_112X96 = ARCFACE_TEMPLATE - np.array([8.0, 0.0])


def template_for(size: int, width: int | None = None) -> np.ndarray:
    """The (5, 2) template for a crop ``size`` px high and ``width`` px wide (default square).

    Square crops: ``size`` a multiple of 112 (scaled template) or of 128 (scaled, shifted by
    ``8 * size / 128`` in x). Non-square: only ``width = size * 96 / 112`` for ``size`` a
    multiple of 112 (shifted by ``-8 * size / 112`` in x). See the module docstring.
    """
    if width is None or width == size:
        if size > 0 and size % 112 == 0:
            ratio, shift = size / 112, 0.0
        elif size > 0 and size % 128 == 0:
            ratio = size / 128
            shift = 8.0 * ratio
        else:
            raise ValueError(f"crop size must be a multiple of 112 or 128, got {size}")
    elif size > 0 and size % 112 == 0 and width * 112 == size * 96:
        ratio = size / 112
        shift = -8.0 * ratio
    else:
        raise ValueError(
            f"crop {size}x{width} (height x width) is not supported: square crops need a "
            "multiple of 112 or 128, non-square ones are 112x96 or a multiple of it"
        )
    template = ARCFACE_TEMPLATE * ratio
    template[:, 0] += shift
    return template


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama, no reflection) mapping src -> dst.

    Returns the 2x3 matrix M with dst ~ M @ [x, y, 1]. Equals skimage's
    ``SimilarityTransform.estimate`` used by insightface's ``estimate_norm``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def _landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.size != 10:
        raise ValueError(f"need 5 (x, y) landmarks, got an array of shape {points.shape}")
    return points.reshape(5, 2)


def alignment_matrix(
    landmarks: np.ndarray, size: int = 112, width: int | None = None
) -> np.ndarray:
    """The 2x3 similarity mapping the 5 ``landmarks`` onto the template of a crop."""
    return estimate_similarity(_landmarks(landmarks), template_for(size, width))


def warp_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = 112, width: int | None = None
) -> np.ndarray:
    """Warp ``image`` so its 5 landmarks land on the template: a ``size`` x ``width`` crop.

    ``width`` defaults to ``size`` (square). Bilinear, pixels outside the image are 0.
    """
    matrix = alignment_matrix(landmarks, size, width)
    return cv2.warpAffine(image, matrix, (size if width is None else width, size), borderValue=0)


def alignment_residual(landmarks: np.ndarray, size: int = 112, width: int | None = None) -> float:
    """Largest distance (crop px) between the template and the similarity-mapped landmarks.

    0 when the landmarks are the template under some similarity (any position, scale and
    in-plane rotation); large for sets no similarity explains (swapped or misplaced points),
    so a threshold on it rejects bad landmark sets. Non-finite landmarks give ``inf``, so a
    ``residual > threshold`` test rejects them too.
    """
    points = _landmarks(landmarks)
    if not np.isfinite(points).all():
        return float("inf")
    template = template_for(size, width)
    matrix = estimate_similarity(points, template)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(((mapped - template) ** 2).sum(axis=1)).max())
