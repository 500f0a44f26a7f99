"""Which detected face to align, and the fallback when none is found."""

from __future__ import annotations

import numpy as np

from arcflow.face_template import ARCFACE_TEMPLATE


def pick_face(
    boxes: np.ndarray,
    scores: np.ndarray,
    width: int,
    height: int,
    *,
    min_score: float = 0.5,
    centre_weight: float = 0.5,
) -> int | None:
    """Index of the face to keep, or None when no face scores at least ``min_score``.

    Faces are ranked by ``score * (1 - centre_weight * d)`` where ``d`` is the distance of
    the box centre from the image centre, 0 at the centre and 1 at a corner: with
    ``centre_weight`` 0 the most confident face wins, with 1 a central face is preferred
    strongly (datasets of one subject per image with bystanders at the edges).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if not 0.0 <= centre_weight <= 1.0:
        raise ValueError(f"centre_weight must be in [0, 1], got {centre_weight}")
    eligible = scores >= min_score
    if not eligible.any():
        return None
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    half_diagonal = 0.5 * float(np.hypot(width, height))
    distance = np.linalg.norm(centres - [width / 2.0, height / 2.0], axis=1) / half_diagonal
    value = np.where(eligible, scores * (1.0 - centre_weight * np.clip(distance, 0, 1)), -np.inf)
    return int(np.argmax(value))


def centre_crop_landmarks(width: int, height: int) -> np.ndarray:
    """Landmarks that make the alignment warp a plain centre crop (evaluation fallback).

    The template is scaled onto the largest centred square of the image, so warping with
    these points resizes that square to the crop size: every image yields a crop.
    """
    side = min(width, height)
    offset = np.array([(width - side) / 2.0, (height - side) / 2.0])
    return (ARCFACE_TEMPLATE * (side / 112.0) + offset).astype(np.float32)
