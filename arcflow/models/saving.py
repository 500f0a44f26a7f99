"""Saving and loading a trained backbone together with what is needed to rebuild it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arcflow.atomic import atomic_file
from arcflow.errors import DataFormatError, first_line
from arcflow.models import get_backbone


def save_backbone(path: str | Path, model: nn.Module, name: str, kwargs: dict[str, Any]) -> None:
    """Atomically write ``{"name", "kwargs", "state_dict"}``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_file(path) as tmp:
        torch.save({"name": name, "kwargs": kwargs, "state_dict": state}, tmp)


def load_backbone(path: str | Path) -> nn.Module:
    """Rebuild the backbone saved by :func:`save_backbone`, in eval mode on the CPU."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such model file") from None
    except pickle.UnpicklingError:
        raise DataFormatError(
            f"{path}: not a tensors-only checkpoint, refused without running it"
        ) from None
    except Exception as exc:  # torn zip, not a torch file: torch raises many types
        raise DataFormatError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None
    try:
        model = get_backbone(blob["name"], **blob["kwargs"])
        model.load_state_dict(blob["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise DataFormatError(
            f"{path}: not an ArcFlow backbone checkpoint ({first_line(exc)})"
        ) from None
    return model.eval()
