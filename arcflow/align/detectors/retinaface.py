"""RetinaFace (Deng et al. 2020) with a ResNet-50 backbone: retinaface-pytorch's network.

Only the network class comes from the package (``retinaface.network.RetinaFace``, built with
``pretrained=False`` so torchvision fetches nothing); the weights are a local file and the
pre/post-processing is done here, batched on the configured device:

1. BGR -> RGB, resize so the longer side is ``max_size`` (bilinear, as the package's
   ``LongestMaxSize``), normalise with the ImageNet mean/std (the package's
   ``albumentations.Normalize``);
2. pad to a multiple of 32 (the mean colour, 0 after normalisation) and run the network on
   batches of images that share that padded size (so an image's result does not depend on
   the other images of the call);
3. prior boxes (min sizes 16/32, 64/128, 256/512 at strides 8, 16, 32), decode boxes and
   landmarks with variances (0.1, 0.2), softmax score > ``confidence_threshold``, the
   ``top_k`` best, NMS (``torchvision.ops.nms``, IoU ``nms_threshold``), at most
   ``keep_top_k`` faces; coordinates are scaled back to the input image, boxes clipped to it.

The weights file is the package's release (``retinaface_resnet50_2020-07-20-*.zip``, a zip
holding one ``.pth``) or the ``.pth`` state dict itself, loaded with ``weights_only=True``
and strictly (every key and shape must match).
"""

from __future__ import annotations

import io
import math
import warnings
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from arcflow.align.detectors import Detection, check_images, resolve_device
from arcflow.errors import ConfigError, DataFormatError

#: Anchor sizes (pixels of the network input) per feature level, and the levels' strides.
MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
#: Box-regression variances of the centre and of the log size.
VARIANCES: tuple[float, float] = (0.1, 0.2)
#: ImageNet RGB mean and std in 0..1 units (albumentations.Normalize's defaults).
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
#: The batch canvas is padded to a multiple of the coarsest stride.
PAD_MULTIPLE = 32


def build_network() -> nn.Module:
    """retinaface-pytorch's ResNet-50 RetinaFace, randomly initialised, nothing downloaded."""
    try:
        from retinaface.network import RetinaFace
    except ImportError as exc:
        raise ConfigError(
            f"the retinaface face detector needs retinaface-pytorch ({exc})",
            hint="pip install --no-deps retinaface-pytorch==0.0.8 (scripts/setup_venv.sh does)",
        ) from exc
    with warnings.catch_warnings():
        # torchvision deprecates resnet50(pretrained=False) in favour of weights=None; same thing.
        warnings.simplefilter("ignore", UserWarning)
        return RetinaFace(
            name="Resnet50",
            pretrained=False,
            return_layers={"layer2": 1, "layer3": 2, "layer4": 3},
            in_channels=256,
            out_channels=256,
        )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a torch ``.pth``, or a zip holding exactly one.

    A ``{"state_dict": ...}`` checkpoint is unwrapped, and a ``model.`` or ``module.`` prefix
    shared by every key is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"RetinaFace weights file not found: {path}",
            hint="point the detector's weights at the file the download stage fetched",
        )
    try:
        obj = _torch_load(path)
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(f"{path}: not a PyTorch state dict: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise DataFormatError(f"{path}: expected a non-empty state dict, got {type(obj).__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise DataFormatError(f"{path}: expected a state dict of named tensors")
    for prefix in ("module.", "model."):
        if all(key.startswith(prefix) for key in obj):
            obj = {key[len(prefix) :]: value for key, value in obj.items()}
    return obj


def _torch_load(path: Path) -> Any:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            # torch's own format is a zip of several entries ({name}/data.pkl, ...); the
            # package's release is a zip holding a single serialised file.
            if len(names) == 1:
                data = archive.read(names[0])
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


@lru_cache(maxsize=16)
def _prior_boxes_cpu(height: int, width: int) -> torch.Tensor:
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([grid_x, grid_y], dim=-1)  # (rows, cols, 2)
        wh = torch.tensor([[s / width, s / height] for s in sizes], dtype=torch.float64)
        anchors = torch.cat(
            [
                centres[:, :, None, :].expand(rows, cols, len(sizes), 2),
                wh[None, None].expand(rows, cols, len(sizes), 2),
            ],
            dim=-1,
        )
        levels.append(anchors.reshape(-1, 4))
    return torch.cat(levels).float()


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """``(P, 4)`` anchors ``cx, cy, w, h`` relative to a ``height`` x ``width`` input.

    In the network's output order: level by level (strides 8, 16, 32), row-major over the
    level's ``ceil(height / stride) x ceil(width / stride)`` cells, then the level's sizes.
    """
    return _prior_boxes_cpu(int(height), int(width)).clone()


def decode_boxes(
    loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCES
) -> torch.Tensor:
    """Regressions ``(..., P, 4)`` -> boxes ``x1, y1, x2, y2`` (relative units, like priors).

    ``centre = prior_centre + loc[:2] * v0 * prior_size``,
    ``size = prior_size * exp(loc[2:] * v1)``.
    """
    centres = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)


def decode_landmarks(
    pre: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCES
) -> torch.Tensor:
    """Regressions ``(..., P, 10)`` -> landmarks ``(..., P, 5, 2)``.

    ``point_k = prior_centre + pre[2k:2k+2] * v0 * prior_size``.
    """
    points = pre.reshape(*pre.shape[:-1], 5, 2)
    return priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]


class RetinaFaceDetector:
    """RetinaFace ResNet-50 from a local weights file (see the module docstring).

    - ``weights``: the weights file (required; nothing is downloaded);
    - ``max_size``: the longer image side is resized to this (up or down, like the package);
    - ``confidence_threshold``, ``nms_threshold``: the package's defaults (0.7, 0.4);
    - ``top_k`` / ``keep_top_k``: candidates kept before / faces kept after NMS, per image;
    - ``device``: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``…;
    - ``batch_size``: images per forward pass (images sharing a padded input size).
    """

    name = "retinaface"

    def __init__(
        self,
        weights: str | Path,
        *,
        max_size: int = 960,
        confidence_threshold: float = 0.7,
        nms_threshold: float = 0.4,
        top_k: int = 5000,
        keep_top_k: int = 750,
        device: Any = "auto",
        batch_size: int = 8,
    ) -> None:
        if int(max_size) < PAD_MULTIPLE:
            raise ValueError(f"max_size must be >= {PAD_MULTIPLE}, got {max_size}")
        if not 0.0 <= float(confidence_threshold) <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        if not 0.0 < float(nms_threshold) <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if int(top_k) < 1 or int(keep_top_k) < 1 or int(batch_size) < 1:
            raise ValueError("top_k, keep_top_k and batch_size must be >= 1")
        self.weights = Path(weights)
        self.max_size = int(max_size)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.keep_top_k = int(keep_top_k)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)

        state_dict = load_state_dict(self.weights)
        network = build_network()
        try:
            network.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            detail = _mismatch(network, state_dict) or str(exc).strip().splitlines()[-1]
            raise DataFormatError(
                f"{self.weights}: not RetinaFace ResNet-50 weights: {detail}",
                hint="use the retinaface-pytorch resnet50_2020-07-20 release (zip or .pth)",
            ) from exc
        self._model = network.to(self.device).eval()
        self._mean = torch.tensor(MEAN_RGB, device=self.device).view(3, 1, 1) * 255.0
        self._std = torch.tensor(STD_RGB, device=self.device).view(3, 1, 1) * 255.0

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        images = check_images(images)
        results: list[Detection] = [Detection.empty()] * len(images)
        # Batch only images that share a network input size: an image's detections then do
        # not depend on which other images came in the same call.
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            new_h, new_w = self.input_size(*image.shape[:2])
            canvas = (_round_up(new_h, PAD_MULTIPLE), _round_up(new_w, PAD_MULTIPLE))
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
        scale = self.max_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @torch.inference_mode()
    def _detect_batch(self, images: list[np.ndarray], canvas: tuple[int, int]) -> list[Detection]:
        canvas_h, canvas_w = canvas
        batch = torch.zeros((len(images), 3, canvas_h, canvas_w), device=self.device)
        scales = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            new_h, new_w = self.input_size(height, width)
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            if (new_h, new_w) != (height, width):
                rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            pixels = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float()
            batch[i, :, :new_h, :new_w] = (pixels - self._mean) / self._std
            # Per-axis factors from network-input pixels back to image pixels.
            scales.append((width / new_w, height / new_h))

        loc, conf, land = self._model(batch)
        priors = prior_boxes(canvas_h, canvas_w).to(self.device)
        if loc.shape[1] != priors.shape[0]:
            raise RuntimeError(
                f"RetinaFace gave {loc.shape[1]} anchors for a {canvas_h}x{canvas_w} input, "
                f"the prior boxes are {priors.shape[0]}"
            )
        canvas = torch.tensor([canvas_w, canvas_h], dtype=torch.float32, device=self.device)
        boxes = decode_boxes(loc.float(), priors) * canvas.repeat(2)
        points = decode_landmarks(land.float(), priors) * canvas
        scores = torch.softmax(conf.float(), dim=-1)[..., 1]

        out = []
        for i, image in enumerate(images):
            out.append(self._select(boxes[i], scores[i], points[i], scales[i], image.shape[:2]))
        return out

    def _select(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        points: torch.Tensor,
        scale: tuple[float, float],
        shape: tuple[int, ...],
    ) -> Detection:
        from torchvision.ops import nms

        keep = torch.nonzero(scores > self.confidence_threshold).squeeze(1)
        if keep.numel() == 0:
            return Detection.empty()
        if keep.numel() > self.top_k:
            keep = keep[torch.topk(scores[keep], self.top_k).indices]
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        keep = nms(boxes, scores, self.nms_threshold)[: self.keep_top_k]
        boxes, scores, points = boxes[keep], scores[keep], points[keep]

        factor = torch.tensor(scale, dtype=torch.float32, device=boxes.device)
        boxes = boxes * factor.repeat(2)
        points = points * factor
        height, width = shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detection(
            boxes=boxes[valid].cpu().numpy(),
            scores=scores[valid].cpu().numpy(),
            landmarks=points[valid].cpu().numpy(),
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _mismatch(network: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """What keeps ``state_dict`` from loading strictly into ``network``, in one line."""
    expected = network.state_dict()

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{key} is {tuple(state_dict[key].shape)}, expected {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({some(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches ({some(shapes)})")
    return "; ".join(parts)
