"""Progress bars with rate and ETA; quiet under CI unless ARCFLOW_PROGRESS=1."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    """Bars show unless running under CI (``CI=true``); ARCFLOW_PROGRESS=1/0 forces."""
    forced = os.environ.get("ARCFLOW_PROGRESS")
    if forced is not None:
        return forced not in ("0", "false", "")
    return os.environ.get("CI", "").lower() not in ("true", "1")


def progress(iterable: Iterable[T] | None = None, *, hide: bool = False, **kwargs: Any) -> tqdm:
    """``tqdm(iterable)`` honouring :func:`enabled`, printing dynamic width to stderr.

    Without an iterable it is a manual bar (``total=…``, then ``update(n)``). ``hide``
    silences it regardless (e.g. on every process but the main one).
    """
    return tqdm(iterable, disable=hide or not enabled(), dynamic_ncols=True, **kwargs)
