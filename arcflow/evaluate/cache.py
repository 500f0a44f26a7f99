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

    def has(self, model_key: str, data_key: str, flip: bool) -> bool:
        """Whether an entry exists (it may still turn out unreadable)."""
        path = self.path(model_key, data_key, flip)
        return path is not None and path.is_file()

    def get(self, model_key: str, data_key: str, flip: bool) -> Features | None:
        """The cached features, or None when absent or unreadable."""
        path = self.path(model_key, data_key, flip)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as blob:
                return Features(blob["plain"], blob.get("flipped", None))
        except (OSError, ValueError, KeyError):
            return None  # unreadable entry: embed again and overwrite it

    def put(self, model_key: str, data_key: str, flip: bool, features: Features) -> None:
        """Store ``features`` atomically (nothing when caching is off)."""
        path = self.path(model_key, data_key, flip)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"plain": features.plain}
        if features.flipped is not None:
            arrays["flipped"] = features.flipped
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def get_or_compute(
        self, model_key: str, data_key: str, flip: bool, compute: Callable[[], Features]
    ) -> tuple[Features, bool]:
        """The cached features, or ``compute()`` stored atomically; also whether it was a hit."""
        cached = self.get(model_key, data_key, flip)
        if cached is not None:
            return cached, True
        features = compute()
        self.put(model_key, data_key, flip, features)
        return features, False
