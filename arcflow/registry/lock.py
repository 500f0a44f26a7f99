"""A mutex in the MLflow registry, so promotions from any machine happen one at a time.

MLflow has no compare-and-swap on aliases or tags; the one atomic operation its stores offer is
creating a registered model (names are unique: exactly one of two concurrent creates succeeds).
The lock is therefore a series of generations, each a pair of registered models created once
and never changed:

- ``<name>.promotion-lock.<g>``: whoever creates it holds generation ``g``;
- ``<name>.promotion-lock.<g>.closed``: creating it ends generation ``g``, by its holder when
  the promotion is done, or by a waiter once the holder has held it longer than ``ttl_s``
  (a holder that died). Both can try; exactly one succeeds.

A process may create generation ``g + 1`` only after seeing ``g`` closed, and holds it only if,
read back, ``g + 1`` is the newest generation and is still open, so at most one process holds
the lock at any time provided no promotion outlives ``ttl_s`` (the holder checks that before
every write: :meth:`Held.check`). Generations two behind the newest are deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from arcflow.errors import RegistryError, first_line

ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
log = logging.getLogger("arcflow")


def lock_name(model_name: str) -> str:
    """The prefix of every lock generation of ``model_name``."""
    return f"{model_name}.promotion-lock"


def holder_id() -> str:
    """Who holds a lock: host, process and a random part (two locks in one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Held:
    """A held generation of the lock."""

    name: str
    generation: int
    holder: str
    ttl_s: float
    since: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Raise before a write if this hold is past ``ttl_s``: a waiter may have broken it."""
        held = time.monotonic() - self.since
        if held > self.ttl_s:
            raise RegistryError(
                f"the promotion lock was held {held:.0f} s, more than registry.lock_ttl_s "
                f"({self.ttl_s:.0f} s): another promotion may have started; nothing more is "
                "written",
                hint="raise registry.lock_ttl_s above the longest promotion",
            )


def _held_name(prefix: str, generation: int) -> str:
    return f"{prefix}.{generation:08d}"


def _closed_name(prefix: str, generation: int) -> str:
    return f"{_held_name(prefix, generation)}.closed"


#: Errors after which a create may or may not have landed (a reset connection, an overloaded
#: server): the create is retried, and an "already exists" then read back.
TRANSIENT = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
CREATE_ATTEMPTS = 4


def _create(client: Any, name: str, tags: dict[str, str]) -> bool:
    """Create the registered model ``name``; False if it exists (someone else created it).

    A transient failure leaves the outcome unknown, so the create is retried; when a retry
    finds the model, it is ours if it carries our ``tags`` (each holder's are unique).
    """
    from mlflow.exceptions import MlflowException

    attempt = 0
    while True:
        try:
            client.create_registered_model(
                name, tags=tags, description="promotion lock generation (arcflow.registry.lock)"
            )
            return True
        except MlflowException as exc:
            if exc.error_code == ALREADY_EXISTS:
                return attempt > 0 and _carries(client, name, tags)
            attempt += 1
            if exc.error_code not in TRANSIENT or attempt == CREATE_ATTEMPTS:
                raise RegistryError(
                    f"MLflow registry: cannot use the promotion lock: {first_line(exc)}"
                ) from None
            log.info("registry lock: %s; creating %s again", first_line(exc), name)
            time.sleep(0.2 * 2**attempt * (0.5 + random.random()))


def _carries(client: Any, name: str, tags: dict[str, str]) -> bool:
    """Whether the registered model ``name`` has every one of ``tags``."""
    found = client.get_registered_model(name).tags
    return all(found.get(key) == value for key, value in tags.items())


@dataclass(frozen=True)
class _State:
    """The lock's generations as the registry lists them."""

    latest: int  # the newest generation created (0: none)
    closed: frozenset[int]
    tags: dict[str, str]  # of the newest generation

    @property
    def open(self) -> bool:
        return self.latest > 0 and self.latest not in self.closed


def _state(client: Any, prefix: str) -> _State:
    pattern = re.compile(re.escape(prefix) + r"\.(\d{8})(\.closed)?")
    held: dict[int, Any] = {}
    closed: set[int] = set()
    token = None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}.%'", max_results=1000, page_token=token
        )
        for model in page:
            match = pattern.fullmatch(model.name)
            if match is None:
                continue
            if match[2]:
                closed.add(int(match[1]))
            else:
                held[int(match[1])] = model
        token = page.token
        if not token:
            break
    latest = max(held, default=0)
    return _State(latest, frozenset(closed), dict(held[latest].tags) if latest else {})


def is_free(client: Any, model_name: str) -> bool:
    """Whether nobody holds the promotion lock of ``model_name`` now."""
    return not _state(client, lock_name(model_name)).open


def _delete(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)


def _prune(client: Any, prefix: str, generation: int) -> None:
    """Delete the generations two or more behind ``generation`` (they can no longer matter)."""
    state = _state(client, prefix)
    for old in {g for g in state.closed if g <= generation - 2}:
        _delete(client, _held_name(prefix, old))
        _delete(client, _closed_name(prefix, old))


def _acquire(client: Any, prefix: str, holder: str, ttl_s: float) -> tuple[int | None, _State]:
    """One attempt: the generation now held, or None and what stands in the way."""
    state = _state(client, prefix)
    if state.open:
        acquired = float(state.tags.get("acquired_at", "0") or 0)
        if time.time() - acquired > ttl_s:  # its holder is dead: end its generation
            _create(client, _closed_name(prefix, state.latest), {"by": holder, "why": "stale"})
        return None, state
    generation = state.latest + 1
    tags = {"holder": holder, "acquired_at": f"{time.time():.3f}"}
    if not _create(client, _held_name(prefix, generation), tags):
        return None, state  # another process took it first
    after = _state(client, prefix)
    if after.latest != generation or not after.open:
        # a generation long pruned, re-created from a stale view: newer ones exist
        _delete(client, _held_name(prefix, generation))
        return None, after
    return generation, after


@contextlib.contextmanager
def registry_lock(
    client: Any, model_name: str, *, timeout_s: float, ttl_s: float, poll_s: float = 0.25
) -> Iterator[Held]:
    """Hold the promotion lock of ``model_name`` for the block."""
    prefix = lock_name(model_name)
    holder = holder_id()
    deadline = time.monotonic() + timeout_s
    while True:
        generation, state = _acquire(client, prefix, holder, ttl_s)
        if generation is not None:
            break
        if time.monotonic() > deadline:
            who = state.tags.get("holder", "another process")
            since = float(state.tags.get("acquired_at", "0") or 0)
            raise RegistryError(
                f"registry lock {prefix} is held by {who} since {time.ctime(since)}",
                hint=f"wait for it; a holder dead for registry.lock_ttl_s ({ttl_s:.0f} s) "
                "is broken automatically",
            )
        time.sleep(poll_s * (0.5 + random.random()))
    held = Held(prefix, generation, holder, ttl_s)
    _prune(client, prefix, generation)
    try:
        yield held
    finally:
        if not _create(client, _closed_name(prefix, generation), {"by": holder, "why": "done"}):
            log.warning(
                "registry lock %s generation %d was broken as stale while held by %s",
                prefix,
                generation,
                holder,
            )
