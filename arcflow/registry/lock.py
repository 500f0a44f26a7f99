"""A mutex in the MLflow registry, so promotions from any machine happen one at a time.

MLflow has no compare-and-swap on aliases; the one atomic operation its stores offer is creating
a registered model (names are unique). The lock is a registered model ``<name>.promotion-lock``,
created to acquire and deleted to release. A lock older than ``ttl_s`` belongs to a process that
died and is broken.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from arcflow.errors import RegistryError

ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


def lock_name(model_name: str) -> str:
    return f"{model_name}.promotion-lock"


def holder_id() -> str:
    """Who holds a lock: host, process and a random part (two locks in one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _try_acquire(client: Any, name: str, holder: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name,
            tags={"holder": holder, "acquired_at": f"{time.time():.3f}"},
            description="held while a promotion or rollback runs; deleted when it ends",
        )
        return True
    except MlflowException as exc:
        if exc.error_code == ALREADY_EXISTS:
            return False
        raise RegistryError(f"MLflow registry: cannot take the promotion lock: {exc}") from None


def _current_holder(client: Any, name: str) -> tuple[str, float] | None:
    """(holder, acquired_at) of the lock, or None if it was released meanwhile."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        return None
    return tags.get("holder", "?"), float(tags.get("acquired_at", "0") or 0)


def _delete(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)


@contextlib.contextmanager
def registry_lock(
    client: Any, model_name: str, *, timeout_s: float, ttl_s: float, poll_s: float = 0.25
) -> Iterator[str]:
    """Hold the promotion lock of ``model_name`` for the block; yields the holder id."""
    name = lock_name(model_name)
    holder = holder_id()
    deadline = time.monotonic() + timeout_s
    while not _try_acquire(client, name, holder):
        current = _current_holder(client, name)
        if current is not None and time.time() - current[1] > ttl_s:
            _delete(client, name)  # its holder died: break it (another waiter may win the retry)
            continue
        if time.monotonic() > deadline:
            who = f"{current[0]} since {time.ctime(current[1])}" if current else "another process"
            raise RegistryError(
                f"registry lock {name} is held by {who}",
                hint=f"wait for it, or delete the registered model {name} if its holder is dead",
            )
        time.sleep(poll_s * (0.5 + random.random()))
    try:
        yield holder
    finally:
        current = _current_holder(client, name)
        if current is not None and current[0] == holder:  # not if it was broken as stale
            _delete(client, name)
