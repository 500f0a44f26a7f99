"""The embedding contract, torch-free: crop normalisation, L2 normalisation, ONNX Runtime.

Shared by evaluate (which also runs PyTorch backbones) and the face service (which runs only
ONNX, so its environment needs no torch). Crops are RGB ``uint8`` ``(N, H, W, 3)``; the network
input is ``(x / 255 - 0.5) / 0.5`` in NCHW float32; embeddings come out raw and are compared
after L2 normalisation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from arcflow.errors import DataFormatError


def file_digest(path: str | Path) -> str:
    """BLAKE2b hex digest of a file's bytes (cache keys for weights and datasets)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:32]


def normalise_crops(rgb: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` ``(N, H, W, 3)`` -> the network input: float32 NCHW in [-1, 1]."""
    return (
        (rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(0, 3, 1, 2).copy()
    )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime providers for ``device``: CUDA first when asked for and available."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


class OnnxEncoder:
    """An exported ONNX model run by ONNX Runtime (CUDA provider first when available)."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=onnx_providers(device)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise DataFormatError(f"{path}: not a loadable ONNX model ({exc})") from None
        self.input = self.session.get_inputs()[0].name
        provider = self.session.get_providers()[0].removesuffix("ExecutionProvider").lower()
        # features differ in the last bits between providers: never reuse one's for another's
        self.key = f"onnx-{file_digest(path)}-{provider}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: batch})[0], dtype=np.float32)


def flip_embed(encoder: OnnxEncoder, batch: np.ndarray) -> np.ndarray:
    """Unit embeddings with the flip test: ``l2(f(x) + f(flip(x)))`` of a normalised batch.

    The same rule as evaluate's pair sets (``Features.combined()``); x and its mirror run
    as one batch of 2N.
    """
    both = encoder(np.concatenate([batch, np.ascontiguousarray(batch[..., ::-1])]))
    n = len(batch)
    return l2_normalize(both[:n] + both[n:])
