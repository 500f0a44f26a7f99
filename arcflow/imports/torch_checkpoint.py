"""Community PyTorch checkpoints (insightface's arcface_torch layout) as ArcFlow backbones.

A checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers only,
so a pickle that would build any other object is refused before anything runs. It may be a
bare state dict or one wrapped in a dict (``state_dict``, ``model``, ``backbone``,
``model_state_dict``, ``net``, ``module``), with DDP's ``module.`` prefix or not, in float32 or
float16. The architecture is inferred from the keys and shapes: each backbone ArcFlow knows
(IResNet-18…200, MobileFaceNet and its large variant) is built on the ``meta`` device (no
memory), its width and embedding size taken from the checkpoint, and the one whose state dict
has exactly the checkpoint's keys and shapes is it. The weights then load strictly.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arcflow.errors import DataFormatError, first_line
from arcflow.models import get_backbone, list_backbones

#: Keys under which training scripts wrap the model's state dict.
WRAPPER_KEYS = ("state_dict", "model", "backbone", "model_state_dict", "net", "module")
#: The embedding size of a backbone built with the defaults (to find its embedding layer).
_DEFAULT_EMBEDDING = 512


@dataclass(frozen=True)
class Architecture:
    """What :func:`get_backbone` needs to rebuild a checkpoint's module."""

    name: str
    width: float
    embedding_size: int

    def kwargs(self) -> dict[str, Any]:
        return {"width": self.width, "embedding_size": self.embedding_size}


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's state dict (float tensors as stored) and its dtype name."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataFormatError(
            f"{path}: not a tensors-only checkpoint, refused without running it "
            f"({first_line(exc, 200)})",
            hint="save the model's state_dict() (torch.save(model.state_dict(), path))",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataFormatError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{first_line(exc, 200)}"
        ) from None
    state = _unwrap(blob, path)
    dtypes = {str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()}
    if len(dtypes) != 1:
        raise DataFormatError(f"{path}: mixed or no floating-point tensors: {sorted(dtypes)}")
    return state, dtypes.pop()


def _unwrap(blob: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside ``blob`` (bare or wrapped), without DDP's ``module.`` prefix."""
    for _ in range(3):  # {"model": {"state_dict": ...}} at most
        if (
            isinstance(blob, Mapping)
            and blob
            and all(isinstance(v, torch.Tensor) for v in blob.values())
        ):
            break
        inner = [blob[k] for k in WRAPPER_KEYS if isinstance(blob, Mapping) and k in blob]
        if not inner:
            kind = type(blob).__name__
            keys = ", ".join(map(str, list(blob)[:5])) if isinstance(blob, Mapping) else ""
            raise DataFormatError(
                f"{path}: no state dict in this checkpoint ({kind}{': ' + keys if keys else ''})",
                hint=f"a dict of tensors, or one under {', '.join(WRAPPER_KEYS)}",
            )
        blob = inner[0]
    else:
        raise DataFormatError(f"{path}: the state dict is nested too deeply")
    state = {str(k): v for k, v in blob.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def infer_architecture(
    state: Mapping[str, torch.Tensor], where: str, *, names: list[str] | None = None
) -> Architecture:
    """The one backbone of ``names`` (default: every known one) whose state dict has exactly
    ``state``'s keys and shapes."""
    closest: tuple[int, str, set[str], set[str]] | None = None
    for name in names or list_backbones():
        reference = _meta_state(name, 1.0, _DEFAULT_EMBEDDING)
        missing, unexpected = set(reference) - set(state), set(state) - set(reference)
        if missing or unexpected:
            distance = len(missing) + len(unexpected)
            if closest is None or distance < closest[0]:
                closest = (distance, name, missing, unexpected)
            continue
        first = next(iter(reference))  # the stem's convolution: channels scale with the width
        width = state[first].shape[0] / reference[first].shape[0]
        embedding = _embedding_size(reference, state)
        candidate = _meta_state(name, width, embedding)
        if all(tuple(state[k].shape) == tuple(t.shape) for k, t in candidate.items()):
            return Architecture(name, width, embedding)
        wrong = [k for k, t in candidate.items() if tuple(state[k].shape) != tuple(t.shape)]
        raise DataFormatError(
            f"{where}: the keys are {name}'s but the shapes are not "
            f"(width {width:g}, embedding {embedding}): {_some(wrong)}"
        )
    assert closest is not None
    _, name, missing, unexpected = closest
    raise DataFormatError(
        f"{where}: not a known architecture; closest is {name}: "
        f"missing {_some(sorted(missing))}; unexpected {_some(sorted(unexpected))}",
        hint="known: " + ", ".join(list_backbones()),
    )


def load_module(state: Mapping[str, torch.Tensor], arch: Architecture, where: str) -> nn.Module:
    """``arch`` built on the CPU with ``state`` loaded strictly (cast to float32), in eval mode."""
    model = get_backbone(arch.name, **arch.kwargs())
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        reference = model.state_dict()
        missing = sorted(set(reference) - set(state))
        unexpected = sorted(set(state) - set(reference))
        detail = f"missing {_some(missing)}; unexpected {_some(unexpected)}"
        if not missing and not unexpected:
            detail = str(exc).strip().splitlines()[-1][:300]
        raise DataFormatError(f"{where}: does not load into {arch.name}: {detail}") from None
    return model.eval()


def _meta_state(name: str, width: float, embedding: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return get_backbone(name, width=width, embedding_size=embedding).state_dict()


def _embedding_size(
    reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> int:
    """The size of the last 1-D weight that has the default embedding size in ``reference``
    (the embedding's BatchNorm), read from ``state``."""
    size = (_DEFAULT_EMBEDDING,)
    last = [k for k, t in reference.items() if k.endswith("weight") and t.shape == size]
    return int(state[last[-1]].shape[0])


def _some(keys: list[str]) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
