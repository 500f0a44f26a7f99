"""MobileFaceNet ("mbf"), with the state-dict layout of insightface arcface_torch's backbone.

A stride-2 3x3 stem, then inverted-bottleneck blocks (1x1 expand -> depthwise 3x3 -> linear 1x1
project) in four groups whose first block halves the resolution (112 -> 56 -> 28 -> 14 -> 7), a
1x1 ``conv_sep`` to 512 channels and the GDC head: a linear depthwise conv over the whole 7x7 map
+ BN -> flatten -> bias-free Linear -> BN1d. Activations are PReLU. ``scale`` multiplies the trunk
widths (64/128 per pixel); the expansion widths (128/256/512) do not scale.

Key layout: the trunk is a ``ModuleList`` ``layers.0`` .. ``layers.7`` (stem, block group 0,
then alternating downsampling ``DepthWise`` / ``Residual`` groups), then ``conv_sep`` and
``features``. Conv+BN(+PReLU) units keep their modules in ``.layers`` (``.layers.0`` conv,
``.1`` BN, ``.2`` PReLU), so insightface ``mbf``/``mbf_large`` checkpoints load strictly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from arcflow.models.iresnet import check_backbone_args, scaled_width

#: (blocks per group, trunk scale) of insightface's get_mbf / get_mbf_large.
VARIANTS: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "mobilefacenet": ((1, 4, 6, 2), 2),
    "mobilefacenet_large": ((2, 8, 12, 4), 4),
}


class ConvBlock(nn.Module):
    """Conv (no bias) -> BN, then PReLU unless ``activation`` is False (a "linear" block)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        *,
        activation: bool = True,
    ) -> None:
        super().__init__()
        parts: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            parts.append(nn.PReLU(out_channels))
        self.layers = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """1x1 expand to ``hidden`` -> depthwise 3x3 (``stride``) -> linear 1x1 project, + identity."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int, stride: int, *, residual: bool
    ) -> None:
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual DepthWise block must keep its shape")
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_channels, hidden),
            ConvBlock(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden),
            ConvBlock(hidden, out_channels, activation=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``blocks`` shape-preserving residual :class:`DepthWise` blocks on ``channels``."""

    def __init__(self, channels: int, blocks: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DepthWise(channels, channels, hidden, 1, residual=True) for _ in range(blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv head: linear depthwise ``kernel``-square conv + BN -> flatten ->
    dropout -> bias-free Linear -> BN1d. Dropout holds no state, so the keys stay insightface's.
    """

    def __init__(self, channels: int, kernel: int, embedding_size: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ConvBlock(channels, channels, kernel=kernel, groups=channels, activation=False),
            nn.Flatten(),
            nn.Linear(channels, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, flatten, fc, bn = self.layers
        return bn(fc(self.dropout(flatten(conv(x)))))


class MobileFaceNet(nn.Module):
    """MobileFaceNet mapping ``(N, 3, input_size, input_size)`` images to ``(N, embedding_size)``.

    Args:
        blocks: residual blocks in the four groups; a first entry of 1 means insightface's grouped
            3x3 ConvBlock (64 groups) instead of a residual group.
        scale: trunk width multiplier (insightface: 2 for mbf, 4 for mbf_large).
        embedding_size: output dimension.
        dropout: dropout probability before the GDC Linear. insightface's mbf has none; the
            default 0 reproduces it exactly.
        width: multiplier on every channel count (rounded, at least 8), for tiny configs; 1.0
            gives insightface's layout.
        fp16: run the trunk under autocast, ``conv_sep`` and the GDC head in fp32 (as insightface).
        input_size: square input side; the GDC kernel is the final map side,
            ``ceil(input_size / 16)`` (7 at 112).
        zero_init_residual: start the last BN gamma of every residual block at 0.
        amp_dtype: autocast dtype when ``fp16``; default float16 on CUDA, bfloat16 elsewhere.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 2,
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
        if len(blocks) != 4 or any(n < 1 for n in blocks):
            raise ValueError(f"blocks must be four positive block counts, got {list(blocks)}")
        if scale < 1:
            raise ValueError(f"scale must be positive, got {scale}")
        check_backbone_args(embedding_size, dropout, width, input_size)
        self.fp16 = fp16
        self.amp_dtype = amp_dtype
        self.embedding_size = embedding_size
        self.input_size = input_size

        def ch(c: int) -> int:
            return scaled_width(c, width)

        low, high = ch(64 * scale), ch(128 * scale)
        if blocks[0] == 1:
            # insightface fixes 64 groups here; gcd keeps it a divisor under any width.
            first: nn.Module = ConvBlock(
                low, low, kernel=3, padding=1, groups=math.gcd(low, ch(64))
            )
        else:
            first = Residual(low, blocks[0], ch(128))
        self.layers = nn.ModuleList(
            [
                ConvBlock(3, low, kernel=3, stride=2, padding=1),
                first,
                DepthWise(low, low, ch(128), 2, residual=False),
                Residual(low, blocks[1], ch(128)),
                DepthWise(low, high, ch(256), 2, residual=False),
                Residual(high, blocks[2], ch(256)),
                DepthWise(high, high, ch(512), 2, residual=False),
                Residual(high, blocks[3], ch(256)),
            ]
        )
        side = input_size
        for _ in range(4):
            side = (side + 1) // 2  # 3x3, stride 2, padding 1
        self.conv_sep = ConvBlock(high, ch(512))
        self.features = GDC(ch(512), side, embedding_size, dropout)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, DepthWise) and module.residual:
                    nn.init.zeros_(module.layers[2].layers[1].weight)

    def _autocast(self, x: torch.Tensor) -> AbstractContextManager[object]:
        if not self.fp16:
            return nullcontext()
        device_type = x.device.type
        dtype = self.amp_dtype
        if dtype is None:
            dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device_type, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast(x):
            for layer in self.layers:
                x = layer(x)
        x = self.conv_sep(x.float() if self.fp16 else x)
        return self.features(x)


def _build(name: str, **kwargs: object) -> MobileFaceNet:
    blocks, scale = VARIANTS[name]
    return MobileFaceNet(blocks, scale, **kwargs)  # type: ignore[arg-type]


def mobilefacenet(**kwargs: object) -> MobileFaceNet:
    """insightface ``mbf``: blocks (1, 4, 6, 2), scale 2."""
    return _build("mobilefacenet", **kwargs)


def mobilefacenet_large(**kwargs: object) -> MobileFaceNet:
    """insightface ``mbf_large``: blocks (2, 8, 12, 4), scale 4."""
    return _build("mobilefacenet_large", **kwargs)
