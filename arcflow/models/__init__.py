"""Face-embedding backbones, looked up by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from arcflow.models.iresnet import (
    IBasicBlock,
    IResNet,
    iresnet18,
    iresnet34,
    iresnet50,
    iresnet100,
    iresnet200,
)
from arcflow.models.mobilefacenet import MobileFaceNet, mobilefacenet, mobilefacenet_large

__all__ = ["IBasicBlock", "IResNet", "MobileFaceNet", "get_backbone", "list_backbones"]

_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "iresnet18": iresnet18,
    "iresnet34": iresnet34,
    "iresnet50": iresnet50,
    "iresnet100": iresnet100,
    "iresnet200": iresnet200,
    "mobilefacenet": mobilefacenet,
    "mobilefacenet_large": mobilefacenet_large,
}
# insightface's short config names.
_ALIASES: dict[str, str] = {
    **{f"r{n.removeprefix('iresnet')}": n for n in _BACKBONES if n.startswith("iresnet")},
    "mbf": "mobilefacenet",
    "mbf_large": "mobilefacenet_large",
}


def _order(name: str) -> tuple[int, int, str]:
    depth = name.removeprefix("iresnet")
    if depth.isdigit():
        return (0, int(depth), name)
    return (1, 0, name)


def list_backbones() -> list[str]:
    """Canonical backbone names accepted by :func:`get_backbone`: iresnets by depth, then others
    by name."""
    return sorted(_BACKBONES, key=_order)


def get_backbone(name: str, **kwargs: object) -> nn.Module:
    """Build the backbone ``name`` with ``kwargs``.

    Names: ``iresnet18/34/50/100/200`` (aliases ``r18`` .. ``r200``) and ``mobilefacenet`` /
    ``mobilefacenet_large`` (aliases ``mbf`` / ``mbf_large``); case-insensitive. Keyword
    arguments, for every backbone: ``embedding_size=512, dropout=0.0, width=1.0, fp16=False,
    input_size=112, zero_init_residual=False``. Raises ``ValueError`` for an unknown name.
    """
    return _BACKBONES[canonical_name(name)](**kwargs)


def canonical_name(name: str) -> str:
    """The backbone's name in :func:`list_backbones` for ``name`` or one of its aliases;
    ``ValueError`` for an unknown name."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _BACKBONES:
        allowed = ", ".join(list_backbones() + sorted(_ALIASES))
        raise ValueError(f"unknown backbone {name!r}; allowed: {allowed}")
    return key


def set_trunk_precision(model: nn.Module, dtype: torch.dtype | None) -> str:
    """Run ``model``'s trunk under autocast to ``dtype`` and its output layer (FC + BN1d) in
    fp32, as insightface's ``fp16`` backbones do (None: everything in fp32). Returns the
    precision's name for cache keys and logs: ``fp32``, ``bf16-trunk`` or ``fp16-trunk``.

    A model without our backbones' ``fp16``/``amp_dtype`` switches (e.g. a compiled wrapper
    around one) is looked through to the backbone inside; anything else stays fp32.
    """
    target = getattr(model, "_orig_mod", model)
    if not hasattr(target, "fp16") or not hasattr(target, "amp_dtype"):
        return "fp32"
    target.fp16 = dtype is not None
    target.amp_dtype = dtype
    if dtype is None:
        return "fp32"
    return {torch.bfloat16: "bf16-trunk", torch.float16: "fp16-trunk"}[dtype]
