"""Models "trained elsewhere", built from this project's own backbones in the layouts people
publish: an arcface_torch checkpoint (``backbone.pth``) and an insightface-pack ONNX."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from arcflow.models import get_backbone


def trained_looking(name: str, seed: int, **kwargs: float) -> nn.Module:
    """A backbone with random weights whose BatchNorm statistics are measured on random crops,
    as training leaves them: unit-scale embeddings that depend on the input (with arbitrary
    statistics a random MobileFaceNet maps every input to nearly the same embedding)."""
    torch.manual_seed(seed)
    model = get_backbone(name, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.momentum = None  # a cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return model.eval()


class PixelInput(nn.Module):
    """``model`` behind insightface's in-graph normalisation: raw 0..255 pixels in, the graph
    subtracts 127.5 and multiplies by 1/127.5 (its first nodes are Sub and Mul)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - 127.5) * (1.0 / 127.5))


def save_checkpoint(model: nn.Module, path: Path) -> Path:
    """arcface_torch's layout, float16 tensors wrapped under ``state_dict``."""
    torch.save({"state_dict": model.half().state_dict(), "epoch": 20}, path)
    model.float()
    return path


def save_pack_onnx(model: nn.Module, path: Path) -> Path:
    """An insightface-pack-style ONNX: normalisation inside the graph, a fixed batch of 1."""
    torch.onnx.export(
        PixelInput(model).eval(),
        (torch.zeros(1, 3, 112, 112),),
        str(path),
        input_names=["input.1"],
        output_names=["fc1"],
        opset_version=13,
        dynamo=False,
    )
    return path
