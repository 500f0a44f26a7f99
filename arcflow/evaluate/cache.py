"""Feature cache: one file per (weights, dataset bytes, flip), so re-scoring never re-embeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from arcflow.atomic import atomic_file
from arcflow.evaluate.embed import Features


class FeatureCache:
    """``<root>/<model key>/<dataset digest>[-flip].npz``; a corrupt entry is recomputed."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)

    def path(self, model_key: str, data_key: str, flip: bool) -> Path | None:
        """Where the entry lives (None when caching is off)."""
        if self.root is None:
            return None
        return self.root / model_key / f"{data_key}{'-flip' if flip else ''}.npz"

    def get_or_compute(
        self, model_key: str, data_key: str, flip: bool, compute: Callable[[], Features]
    ) -> tuple[Features, bool]:
        """The cached features, or ``compute()`` stored atomically; also whether it was a hit."""
        path = self.path(model_key, data_key, flip)
        if path is not None and path.is_file():
            try:
                with np.load(path) as blob:
                    flipped = blob.get("flipped", None)
                    return Features(blob["plain"], flipped), True
            except (OSError, ValueError, KeyError):
                pass  # unreadable entry: embed again and overwrite it
        features = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"plain": features.plain}
            if features.flipped is not None:
                arrays["flipped"] = features.flipped
            with atomic_file(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return features, False
