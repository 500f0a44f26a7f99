"""Learning-rate schedules as multiplicative factors of the base lr, per optimiser step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def lr_factor(
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[int] = (),
) -> Callable[[int], float]:
    """Linear warmup from 0, then ``poly`` (power 1 to 0), ``cosine`` (to 0) or ``step``
    (÷10 at each milestone step, the paper's schedule)."""
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if kind not in ("poly", "cosine", "step"):
        raise ValueError(f"unknown schedule '{kind}': use poly, cosine or step")
    ordered = sorted(milestones)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "step":
            return 0.1 ** sum(step >= m for m in ordered)
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        if kind == "poly":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def sphereface_lambda(step: int, base: float, gamma: float, power: float, minimum: float) -> float:
    """SphereFace's softmax blend at ``step``: ``max(minimum, base·(1 + gamma·step)^(−power))``."""
    return max(minimum, base * (1.0 + gamma * step) ** (-power))
