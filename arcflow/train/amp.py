"""One optimiser step under mixed precision: unscale, clip, then step or skip everything as one.

With fp16 the :class:`~torch.amp.GradScaler` skips the backbone's step when a gradient
overflowed. Partial FC's class centres live outside the optimiser, so on their own they could
step while the backbone skips (or the reverse). :func:`optimizer_step` decides once for both:
an overflow in the centres is shown to the scaler as an overflow (it then skips and backs off
exactly as for its own), and an overflow in the backbone discards the centres' gradients.
In a distributed run every rank agrees (the centres are sharded; the flag is all-reduced).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from arcflow.heads.partial_fc import PartialFC


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    backbone: nn.Module,
    head: nn.Module | None,
    *,
    grad_clip: float,
    momentum: float,
    weight_decay: float,
    distributed: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Step the optimiser (and Partial FC's centres); returns ``(grad norm, stepped)``.

    ``grad norm`` is the backbone's before clipping (NaN when ``grad_clip`` is 0 and fp16 is
    off). ``stepped`` is False when an overflow made the whole step a skip.
    """
    params = [p for p in backbone.parameters() if p.grad is not None]
    centres = head if isinstance(head, PartialFC) else None
    if centres is not None and scaler.is_enabled():
        ok = centres.grads_finite().to(torch.int32)
        if distributed:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if not bool(ok) and params:
            grad = params[0].grad  # one element, whatever its memory format (channels_last)
            grad[(0,) * grad.dim()] = float("inf")  # the scaler sees this step's overflow
    scaler.unscale_(optimizer)
    if grad_clip > 0:
        grad_norm = nn.utils.clip_grad_norm_(params, grad_clip)
    elif scaler.is_enabled() and params:
        grad_norm = nn.utils.get_total_norm([p.grad for p in params])
    else:
        grad_norm = torch.tensor(float("nan"))
    stepped = not scaler.is_enabled() or bool(torch.isfinite(grad_norm))
    if centres is not None:
        if stepped:
            group = optimizer.param_groups[0]
            centres.step(
                group["lr"],
                momentum=momentum,
                weight_decay=weight_decay,
                grad_scale=scaler.get_scale() if scaler.is_enabled() else None,
            )
        centres.zero_grad()
    scaler.step(optimizer)
    scaler.update()
    return grad_norm, stepped
