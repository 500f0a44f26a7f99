"""IResNet backbones (the improved ResNet used by ArcFace), with insightface's state-dict layout.

Layout: a 3x3 stem (stride 1), four stages of pre-activation style ``IBasicBlock``s whose first
block halves the resolution (112 -> 56 -> 28 -> 14 -> 7), then BN -> dropout -> FC -> BN1d to the
embedding. Parameter names match insightface's ``iresnet`` so its checkpoints load strictly.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

_BN_EPS = 1e-5
_BASE_PLANES = (64, 128, 256, 512)

#: Blocks per stage for each depth.
STAGE_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)


def scaled_width(channels: int, width: float) -> int:
    """``channels * width`` rounded to an int, at least 8."""
    return max(8, round(channels * width))


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (downsampled) identity."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_BN_EPS)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        return out + identity


def check_backbone_args(embedding_size: int, dropout: float, width: float, input_size: int) -> None:
    """The constructor arguments every backbone shares, checked with one clear message each."""
    if embedding_size < 1:
        raise ValueError(f"embedding_size must be positive, got {embedding_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if input_size < 16:
        raise ValueError(f"input_size must be at least 16, got {input_size}")


class IResNet(nn.Module):
    """IResNet mapping ``(N, 3, input_size, input_size)`` images to ``(N, embedding_size)``.

    Args:
        layers: blocks per stage (four stages).
        embedding_size: output dimension.
        dropout: dropout probability before the FC layer.
        width: multiplier on the stage widths 64/128/256/512 (rounded, at least 8).
        fp16: run everything up to the dropout under autocast, the FC + BN1d head in fp32.
        input_size: square input side; the FC input is ``C * ceil(input_size / 16) ** 2``.
        zero_init_residual: start each block's last BN (``bn3``) gamma at 0.
        amp_dtype: autocast dtype when ``fp16``; default float16 on CUDA, bfloat16 elsewhere.
    """

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        width: float = 1.0,
        fp16: bool = False,
        input_size: int = 112,
        zero_init_residual: bool = False,
        *,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {list(layers)}")
        check_backbone_args(embedding_size, dropout, width, input_size)
        self.fp16 = fp16
        self.amp_dtype = amp_dtype
        self.embedding_size = embedding_size
        self.input_size = input_size

        planes = [scaled_width(c, width) for c in _BASE_PLANES]
        self.inplanes = planes[0]
        self.conv1 = conv3x3(3, self.inplanes)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=_BN_EPS)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_stage(planes[0], layers[0])
        self.layer2 = self._make_stage(planes[1], layers[1])
        self.layer3 = self._make_stage(planes[2], layers[2])
        self.layer4 = self._make_stage(planes[3], layers[3])

        side = input_size
        for _ in range(4):
            side = (side + 1) // 2  # conv3x3, stride 2, padding 1
        self.bn2 = nn.BatchNorm2d(planes[3], eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(planes[3] * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=_BN_EPS)
        self._init_weights(zero_init_residual)

    def _make_stage(self, planes: int, blocks: int) -> nn.Sequential:
        stride = 2
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes, stride),
                nn.BatchNorm2d(planes, eps=_BN_EPS),
            )
        stage = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, IBasicBlock):
                    nn.init.zeros_(module.bn3.weight)

    def _autocast(self, x: torch.Tensor):
        if not self.fp16:
            return nullcontext()
        device_type = x.device.type
        dtype = self.amp_dtype
        if dtype is None:
            dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device_type, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast(x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        x = self.fc(x.float() if self.fp16 else x)
        return self.features(x)


def _build(name: str, **kwargs: object) -> IResNet:
    return IResNet(STAGE_LAYERS[name], **kwargs)  # type: ignore[arg-type]


def iresnet18(**kwargs: object) -> IResNet:
    """IResNet-18: blocks (2, 2, 2, 2)."""
    return _build("iresnet18", **kwargs)


def iresnet34(**kwargs: object) -> IResNet:
    """IResNet-34: blocks (3, 4, 6, 3)."""
    return _build("iresnet34", **kwargs)


def iresnet50(**kwargs: object) -> IResNet:
    """IResNet-50: blocks (3, 4, 14, 3)."""
    return _build("iresnet50", **kwargs)


def iresnet100(**kwargs: object) -> IResNet:
    """IResNet-100: blocks (3, 13, 30, 3)."""
    return _build("iresnet100", **kwargs)


def iresnet200(**kwargs: object) -> IResNet:
    """IResNet-200: blocks (6, 26, 60, 6)."""
    return _build("iresnet200", **kwargs)
