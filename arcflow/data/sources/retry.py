"""Retry a download attempt with exponential backoff while its failures are transient."""

from __future__ import annotations

import time
from collections.abc import Callable

from arcflow.data.sources.spec import RetryPolicy
from arcflow.errors import SourceError

MAX_RETRY_AFTER_S = 60.0


class Transient(Exception):
    """A failure worth retrying: dropped connection, timeout, 5xx, throttling."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RetriesExhausted(SourceError):
    """Every attempt failed transiently; the partial download is kept for resuming."""

    hint = "rerun to resume the download; check the network or the server"


def with_retries(attempt: Callable[[], None], policy: RetryPolicy, what: str) -> None:
    """Call ``attempt`` until it returns, retrying :class:`Transient` failures."""
    last: Transient | None = None
    for n in range(1, policy.attempts + 1):
        try:
            attempt()
            return
        except Transient as exc:
            last = exc
            if n < policy.attempts:
                wait = policy.backoff_s * 2 ** (n - 1)
                if exc.retry_after is not None:
                    wait = max(wait, min(exc.retry_after, MAX_RETRY_AFTER_S))
                time.sleep(wait)
    raise RetriesExhausted(f"{what}: failed after {policy.attempts} attempts; last error: {last}")
