"""Face-embedding backbones, looked up by name."""

from __future__ import annotations

from collections.abc import Callable

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

__all__ = ["IBasicBlock", "IResNet", "get_backbone", "list_backbones"]

_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "iresnet18": iresnet18,
    "iresnet34": iresnet34,
    "iresnet50": iresnet50,
    "iresnet100": iresnet100,
    "iresnet200": iresnet200,
}
# insightface's short config names.
_ALIASES: dict[str, str] = {f"r{name.removeprefix('iresnet')}": name for name in _BACKBONES}


def list_backbones() -> list[str]:
    """Canonical backbone names accepted by :func:`get_backbone`."""
    return sorted(_BACKBONES, key=lambda n: int(n.removeprefix("iresnet")))


def get_backbone(name: str, **kwargs: object) -> nn.Module:
    """Build the backbone ``name`` (e.g. ``"iresnet50"`` or ``"r50"``) with ``kwargs``.

    Keyword arguments: ``embedding_size=512, dropout=0.0, width=1.0, fp16=False,
    input_size=112, zero_init_residual=False``. Raises ``ValueError`` for an unknown name.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _BACKBONES:
        allowed = ", ".join(list_backbones() + sorted(_ALIASES))
        raise ValueError(f"unknown backbone {name!r}; allowed: {allowed}")
    return _BACKBONES[key](**kwargs)
