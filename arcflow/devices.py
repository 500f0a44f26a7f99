"""Device selection and CPU threading."""

from __future__ import annotations

import os
import platform

import torch


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


def cpu_model() -> str:
    """The CPU's model name (for benchmark reports)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"
