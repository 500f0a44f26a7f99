"""MTCNN (Zhang et al. 2016) through facenet-pytorch, whose weights ship inside its wheel.

facenet-pytorch pins old torch/numpy/Pillow versions; its detection code runs on this
project's, so ``scripts/setup_venv.sh`` installs it with ``--no-deps``. It is imported when
a detector is built, not when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from arcflow.align.detectors import Detection, check_images, resolve_device
from arcflow.errors import ConfigError

FACENET_REQUIREMENT = "facenet-pytorch==2.6.0"


class MTCNNDetector:
    """Offline MTCNN detector (P-, R-, O-net cascade over an image pyramid).

    - ``min_face_size``: smallest face side searched for, in pixels (sets the pyramid);
    - ``thresholds``: score thresholds of the three stages; the last is the final score
      cutoff (facenet-pytorch's 0.7 kept a hand and a glass, at 0.87 and 0.86, on
      insightface's t1.jpg group photo; its six faces all score >= 0.975);
    - ``factor``: pyramid scale step;
    - ``device``: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…;
    - ``batch_size``: images of equal size run through the cascade together, this many at
      a time; images of different sizes run one size group at a time.

    Deterministic: the same images give the same detections (the cascade has no sampling;
    on CPU, torch's kernels are deterministic).
    """

    name = "mtcnn"

    def __init__(
        self,
        *,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.9),
        factor: float = 0.709,
        device: Any = "auto",
        batch_size: int = 16,
    ) -> None:
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three values in [0, 1), got {thresholds}")
        if int(min_face_size) < 1:
            raise ValueError(f"min_face_size must be >= 1 pixel, got {min_face_size}")
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise ConfigError(
                f"the mtcnn face detector needs facenet-pytorch ({exc})",
                hint=f"pip install --no-deps {FACENET_REQUIREMENT} (scripts/setup_venv.sh does)",
            ) from exc

        self.min_face_size = int(min_face_size)
        self.thresholds = thresholds
        self.factor = float(factor)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self._mtcnn = MTCNN(
            min_face_size=self.min_face_size,
            thresholds=list(thresholds),
            factor=self.factor,
            select_largest=False,
            keep_all=True,
            device=self.device,
        ).eval()

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        images = check_images(images)
        results: list[Detection] = [Detection.empty()] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape, []).append(index)
        for shape, indices in groups.items():
            if min(shape[:2]) < self.min_face_size:
                continue  # no pyramid level fits (facenet-pytorch would fail on it)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                # BGR -> RGB, one contiguous (B, H, W, 3) batch: MTCNN's own batched path.
                batch = np.stack([images[i][:, :, ::-1] for i in chunk])
                boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
                for j, index in enumerate(chunk):
                    results[index] = _to_detection(boxes[j], probs[j], points[j], shape)
        return results


def _to_detection(boxes: Any, probs: Any, points: Any, shape: tuple[int, ...]) -> Detection:
    """facenet-pytorch's per-image outputs (None when no face; object arrays) -> Detection."""
    if boxes is None or len(boxes) == 0:
        return Detection.empty()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(probs, dtype=np.float32).reshape(-1)
    landmarks = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
    height, width = shape[:2]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    order = np.argsort(-scores, kind="stable")
    return Detection(boxes=boxes[order], scores=scores[order], landmarks=landmarks[order])
