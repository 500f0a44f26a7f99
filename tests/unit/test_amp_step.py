"""fp16 + Partial FC: the backbone and the class centres step together or skip together."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arcflow.heads.partial_fc import PartialFC
from arcflow.train.amp import optimizer_step

pytestmark = pytest.mark.unit


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    # a channels_last conv first: its gradient cannot be viewed flat
    backbone = nn.Sequential(nn.Conv2d(6, 4, 3), nn.Flatten(), nn.Linear(4, 8))
    backbone[0].to(memory_format=torch.channels_last)
    head = PartialFC(8, 12, s=8.0, m2=0.5, sample_rate=0.5, seed=seed)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    x = torch.randn(5, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 3, 5, 7, 11])
    scaler.scale(head(backbone(x), y)).backward()
    assert not backbone[0].weight.grad.is_contiguous()
    return backbone, head, optimizer, scaler


def _state(backbone: nn.Module, head: PartialFC) -> list[torch.Tensor]:
    return [p.detach().clone() for p in backbone.parameters()] + [head.weight.detach().clone()]


def _step(backbone, head, optimizer, scaler):
    return optimizer_step(
        optimizer, scaler, backbone, head, grad_clip=5.0, momentum=0.9, weight_decay=5e-4
    )


def _changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]


def test_a_finite_step_moves_both() -> None:
    backbone, head, optimizer, scaler = _setup()
    before = _state(backbone, head)
    _, stepped = _step(backbone, head, optimizer, scaler)
    assert stepped and all(_changed(before, _state(backbone, head)))
    assert scaler.get_scale() == 1024.0


@pytest.mark.parametrize("where", ["centres", "backbone"])
def test_an_overflow_anywhere_skips_both_and_backs_off(where: str) -> None:
    """Forced fp16 overflow: an inf in one part's gradients, the whole step skipped."""
    backbone, head, optimizer, scaler = _setup()
    if where == "centres":
        leaf = next(leaf for _, leaf in head._pending if leaf.grad is not None)
        leaf.grad.view(-1)[3] = float("inf")
    else:
        backbone[2].weight.grad.view(-1)[2] = float("inf")
    before = _state(backbone, head)
    _, stepped = _step(backbone, head, optimizer, scaler)
    assert not stepped
    assert not any(_changed(before, _state(backbone, head)))
    assert scaler.get_scale() == 512.0  # backed off as for the scaler's own overflow
    assert not head._pending  # the centres' gradients are consumed, not carried over
    assert not optimizer.state  # no momentum buffer was started by a skipped step
