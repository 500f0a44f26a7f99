"""RetinaFace (Deng et al. 2020) with a ResNet-50 backbone: retinaface-pytorch's network.

Only the network class comes from the package (``retinaface.network.RetinaFace``, built with
``pretrained=False`` so torchvision fetches nothing); the weights are a local file and the
pre/post-processing is done here, batched on the configured device:

1. BGR -> RGB after the shared resize (longer side ``max_size``, bilinear, as the package's
   ``LongestMaxSize``), normalise with the ImageNet mean/std (the package's
   ``albumentations.Normalize``), pad to the batch canvas with the mean colour (0 after
   normalisation);
2. prior boxes, decoding and NMS: :mod:`arcflow.align.detectors.priors`, shared with the
   MobileNet backend.

The weights file is the package's release (``retinaface_resnet50_2020-07-20-*.zip``, a zip
holding one ``.pth``) or the ``.pth`` state dict itself, loaded with ``weights_only=True``
and strictly (every key and shape must match).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from arcflow.align.detectors import resolve_device
from arcflow.align.detectors.priors import (
    PriorBoxDetector,
    decode_boxes,
    decode_landmarks,
    prior_boxes,
)
from arcflow.errors import ConfigError, DataFormatError

# The decoding helpers lived here before they were shared; kept importable from here.
__all__ = [
    "RetinaFaceDetector",
    "build_network",
    "decode_boxes",
    "decode_landmarks",
    "load_state_dict",
    "prior_boxes",
]

#: ImageNet RGB mean and std in 0..1 units (albumentations.Normalize's defaults).
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


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


class RetinaFaceDetector(PriorBoxDetector):
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
        super().__init__(
            max_size=max_size,
            confidence_threshold=confidence_threshold,
            nms_threshold=nms_threshold,
            top_k=top_k,
            keep_top_k=keep_top_k,
            batch_size=batch_size,
        )
        self.weights = Path(weights)
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

    def _forward(
        self, images: list[np.ndarray], canvas: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = torch.zeros((len(images), 3, *canvas), device=self.device)
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).to(self.device)
            pixels = rgb.permute(2, 0, 1).float()
            batch[i, :, :height, :width] = (pixels - self._mean) / self._std
        with torch.inference_mode():
            loc, conf, land = self._model(batch)
            faces = torch.softmax(conf.float(), dim=-1)[..., 1]
        return loc.float().cpu().numpy(), faces.cpu().numpy(), land.float().cpu().numpy()


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
