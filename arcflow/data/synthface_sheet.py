"""A contact sheet of SynthFace images (``arcflow synthface-sheet``): tiles plus landmark dots."""

from __future__ import annotations

import cv2
import numpy as np

from arcflow.data.synthface_parts import MARKER_COLORS

_AA = cv2.LINE_AA


def contact_sheet(
    images: list[np.ndarray], landmarks: list[np.ndarray] | None = None, cols: int = 8
) -> np.ndarray:
    """Tile equally sized BGR images into one sheet; draw landmarks as small coloured dots."""
    if not images:
        raise ValueError("no images to tile")
    h, w = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = img.copy() if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if landmarks is not None:
            for p, col in zip(np.asarray(landmarks[i]), MARKER_COLORS, strict=False):
                centre = (round(float(p[0]) * 4), round(float(p[1]) * 4))
                cv2.circle(tile, centre, 6, col, -1, _AA, 2)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return sheet
