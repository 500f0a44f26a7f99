"""Classification heads (softmax and margin-based softmax) for training face embeddings."""

from __future__ import annotations

from arcflow.heads.margins import (
    HEAD_KINDS,
    MarginHead,
    SoftmaxHead,
    build_head,
    head_margins,
    margin_target,
)

__all__ = ["HEAD_KINDS", "MarginHead", "SoftmaxHead", "build_head", "head_margins", "margin_target"]
