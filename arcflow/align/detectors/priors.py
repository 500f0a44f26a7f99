"""RetinaFace's detection head, shared by its backends: prior boxes, decoding, selection.

Both RetinaFace networks (ResNet-50 in torch, MobileNet-0.25 in ONNX Runtime) end in the same
three outputs per anchor: box regressions ``(B, P, 4)``, face scores and landmark regressions
``(B, P, 10)``. :class:`PriorBoxDetector` holds everything around the network:

1. resize so the longer side is ``max_size`` (bilinear; ``None`` keeps the image's size) and
   group images by their input size padded to a multiple of 32, so an image's result does not
   depend on the other images of the call;
2. run the subclass's network (:meth:`PriorBoxDetector._forward`) on each batch;
3. prior boxes (min sizes 16/32, 64/128, 256/512 at strides 8, 16, 32), decode boxes and
   landmarks with variances (0.1, 0.2), score > ``confidence_threshold``, the ``top_k`` best,
   NMS (greedy, as ``torchvision.ops.nms``; IoU ``nms_threshold``), at most ``keep_top_k``
   faces; coordinates scaled back to the input image, boxes clipped to it.

All of it is numpy (the networks' outputs come back as float32 arrays), so a detector whose
network is not torch (``retinaface_mnet``) needs no torch at all: the face service runs without.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from arcflow.align.detectors import Detection, check_images

#: Anchor sizes (pixels of the network input) per feature level, and the levels' strides.
MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
#: Box-regression variances of the centre and of the log size.
VARIANCES: tuple[float, float] = (0.1, 0.2)
#: The batch canvas is padded to a multiple of the coarsest stride.
PAD_MULTIPLE = 32


@lru_cache(maxsize=16)
def _prior_boxes(height: int, width: int) -> np.ndarray:
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        grid_y, grid_x = np.meshgrid(cy, cx, indexing="ij")
        centres = np.stack([grid_x, grid_y], axis=-1)  # (rows, cols, 2)
        wh = np.array([[s / width, s / height] for s in sizes], dtype=np.float64)
        anchors = np.concatenate(
            [
                np.broadcast_to(centres[:, :, None, :], (rows, cols, len(sizes), 2)),
                np.broadcast_to(wh[None, None], (rows, cols, len(sizes), 2)),
            ],
            axis=-1,
        )
        levels.append(anchors.reshape(-1, 4))
    priors = np.concatenate(levels).astype(np.float32)
    priors.flags.writeable = False  # shared by every call of this size
    return priors


def prior_boxes(height: int, width: int) -> np.ndarray:
    """``(P, 4)`` float32 anchors ``cx, cy, w, h`` relative to a ``height`` x ``width`` input.

    In the network's output order: level by level (strides 8, 16, 32), row-major over the
    level's ``ceil(height / stride) x ceil(width / stride)`` cells, then the level's sizes.
    """
    return _prior_boxes(int(height), int(width)).copy()


def decode_boxes(
    loc: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES
) -> np.ndarray:
    """Regressions ``(..., P, 4)`` -> boxes ``x1, y1, x2, y2`` (relative units, like priors).

    ``centre = prior_centre + loc[:2] * v0 * prior_size``,
    ``size = prior_size * exp(loc[2:] * v1)``.
    """
    centres = priors[:, :2] + loc[..., :2] * np.float32(variances[0]) * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[..., 2:] * np.float32(variances[1]))
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1)


def decode_landmarks(
    pre: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES
) -> np.ndarray:
    """Regressions ``(..., P, 10)`` -> landmarks ``(..., P, 5, 2)``.

    ``point_k = prior_centre + pre[2k:2k+2] * v0 * prior_size``.
    """
    points = pre.reshape(*pre.shape[:-1], 5, 2)
    return priors[:, None, :2] + points * np.float32(variances[0]) * priors[:, None, 2:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``: indices of the kept boxes
    by decreasing score; a box is dropped when its IoU with a kept one is > the threshold
    (areas ``(x2 - x1) * (y2 - y1)``, no +1)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]  # NaN (empty boxes) is kept, as in torchvision
    return np.array(keep, dtype=np.int64)


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


class PriorBoxDetector:
    """The shared part of a RetinaFace backend (see the module docstring).

    Subclasses set ``name`` and implement :meth:`_forward`. Parameters:

    - ``max_size``: the longer image side is resized to this (up or down); ``None`` keeps
      each image's own size;
    - ``confidence_threshold``: the least face score kept; ``nms_threshold``: NMS's IoU;
    - ``top_k`` / ``keep_top_k``: candidates kept before / faces kept after NMS, per image;
    - ``batch_size``: images per forward pass (images sharing a padded input size).
    """

    name: str

    def __init__(
        self,
        *,
        max_size: int | None,
        confidence_threshold: float,
        nms_threshold: float,
        top_k: int,
        keep_top_k: int,
        batch_size: int,
    ) -> None:
        if max_size is not None and int(max_size) < PAD_MULTIPLE:
            raise ValueError(f"max_size must be >= {PAD_MULTIPLE}, got {max_size}")
        if not 0.0 <= float(confidence_threshold) <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        if not 0.0 < float(nms_threshold) <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if int(top_k) < 1 or int(keep_top_k) < 1 or int(batch_size) < 1:
            raise ValueError("top_k, keep_top_k and batch_size must be >= 1")
        self.max_size = None if max_size is None else int(max_size)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.keep_top_k = int(keep_top_k)
        self.batch_size = int(batch_size)

    def _forward(
        self, images: list[np.ndarray], canvas: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network on resized BGR ``images`` padded to ``canvas`` (height, width):
        box regressions ``(B, P, 4)``, face probabilities ``(B, P)``, landmark regressions
        ``(B, P, 10)``, as float32 arrays."""
        raise NotImplementedError

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        images = check_images(images)
        results: list[Detection] = [Detection.empty()] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            new_h, new_w = self.input_size(*image.shape[:2])
            canvas = (round_up(new_h, PAD_MULTIPLE), round_up(new_w, PAD_MULTIPLE))
            groups.setdefault(canvas, []).append(index)
        for canvas, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                found = self._detect_batch([images[i] for i in chunk], canvas)
                for index, detection in zip(chunk, found, strict=True):
                    results[index] = detection
        return results

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image is resized to: the longer side becomes ``max_size``."""
        if self.max_size is None:
            return height, width
        scale = self.max_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _detect_batch(self, images: list[np.ndarray], canvas: tuple[int, int]) -> list[Detection]:
        resized, scales = [], []
        for image in images:
            height, width = image.shape[:2]
            new_h, new_w = self.input_size(height, width)
            if (new_h, new_w) != (height, width):
                image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            resized.append(image)
            # Per-axis factors from network-input pixels back to image pixels.
            scales.append((width / new_w, height / new_h))

        loc, scores, land = (np.asarray(a, np.float32) for a in self._forward(resized, canvas))
        canvas_h, canvas_w = canvas
        priors = prior_boxes(canvas_h, canvas_w)
        if loc.shape[1] != priors.shape[0]:
            raise RuntimeError(
                f"{self.name} gave {loc.shape[1]} anchors for a {canvas_h}x{canvas_w} input, "
                f"the prior boxes are {priors.shape[0]}"
            )
        size = np.array([canvas_w, canvas_h], dtype=np.float32)
        boxes = decode_boxes(loc, priors) * np.tile(size, 2)
        points = decode_landmarks(land, priors) * size
        return [
            self._select(boxes[i], scores[i], points[i], scales[i], image.shape[:2])
            for i, image in enumerate(images)
        ]

    def _select(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        points: np.ndarray,
        scale: tuple[float, float],
        shape: tuple[int, ...],
    ) -> Detection:
        keep = np.flatnonzero(scores > self.confidence_threshold)
        if keep.size == 0:
            return Detection.empty()
        if keep.size > self.top_k:
            keep = keep[np.argsort(-scores[keep], kind="stable")[: self.top_k]]
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        keep = nms(boxes, scores, self.nms_threshold)[: self.keep_top_k]
        boxes, scores, points = boxes[keep], scores[keep], points[keep]

        factor = np.array(scale, dtype=np.float32)
        boxes = boxes * np.tile(factor, 2)
        points = points * factor
        height, width = shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detection(
            boxes=np.ascontiguousarray(boxes[valid], np.float32),
            scores=np.ascontiguousarray(scores[valid], np.float32),
            landmarks=np.ascontiguousarray(points[valid], np.float32),
        )
