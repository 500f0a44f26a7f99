"""Device selection and CPU threading."""

from __future__ import annotations

import os
import platform

import torch
from torch import nn


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from arcflow.errors import ConfigError

        raise ConfigError("train.device is 'cuda' but no CUDA device is visible", hint="use auto")
    if name == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast
    trains the default ~25 % faster than fp32 (BENCHMARKS.md); elsewhere it is emulated."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def cpu_model() -> str:
    """The CPU's model name (for benchmark reports)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def channels_last_is_safe(model: nn.Module, device: torch.device) -> bool:
    """NHWC on CUDA always; on CPU only when every convolution has at least 16 channels.

    torch 2.14's CPU backward crashes (segfault) on channels-last convolutions of 8 channels
    (an IResNet at width 0.125); 16 and more were checked to work.
    """
    if device.type == "cuda":
        return True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return all(min(m.in_channels, m.out_channels) >= 16 for m in convs if m.in_channels > 3)
