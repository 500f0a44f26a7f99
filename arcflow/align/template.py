"""The ArcFace 5-point template and the similarity warp onto it."""

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


def template_for(size: int) -> np.ndarray:
    """The template scaled to a square crop of ``size`` (a multiple of 112)."""
    if size % 112:
        raise ValueError(f"crop size must be a multiple of 112, got {size}")
    return ARCFACE_TEMPLATE * (size / 112)


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


def warp_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so its 5 landmarks land on the ArcFace template (black border)."""
    matrix = estimate_similarity(np.asarray(landmarks).reshape(5, 2), template_for(size))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
