"""One lock per checkout: at most one flow works in a workspace at a time.

The deployments' concurrency limits count runs of one deployment; this lock counts everything
that works in one checkout, whichever flow it is. It is a Prefect global concurrency limit
named from the checkout's own id (:func:`workspace_id`, :func:`lock_name`), created with limit
1 the first time it is needed. A flow holds it for its whole body:

- waiting for it at most ``flows.workspace_lock_timeout_s`` (0: not at all), then failing with
  one line naming the holder (:class:`WorkspaceBusy`);
- on a lease of :data:`LEASE_S` that a background thread renews while the holder lives: a
  holder that dies without releasing (killed, machine lost) frees the workspace once the lease
  runs out, when the Prefect server's repossessor service next looks (every 15 s by default);
- a flow called from a flow that already holds the lock (retraining runs the pipeline as a
  subflow) works under its parent's hold instead of waiting for itself.

A failed lease renewal (the server unreachable for a few seconds at the wrong moment) is
logged as a warning and the flow goes on: losing a long training run to a blip costs more than
the small chance that another flow starts in the checkout before this one ends.

Who holds it is recorded next to it, in a Prefect variable of the same name, because the
server's API does not say who holds a lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
)
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger

from arcflow.errors import ArcFlowError

PREFIX = "arcflow-workspace-"
LEASE_S = 60.0  # the server's minimum; renewed every 45 s while the holder lives
RECORD_TAGS = ["arcflow", "workspace-lock"]

_held: ContextVar[frozenset[str]] = ContextVar("arcflow_workspace_locks", default=frozenset())


class WorkspaceBusy(ArcFlowError):
    """Another flow holds the checkout's workspace lock."""


ID_FILE = Path(".dvc") / "tmp" / "arcflow-workspace-id"  # DVC's own gitignored temp folder


def workspace_id(repo: Path) -> str:
    """The checkout's own random id, made by the first flow that asks (kept in :data:`ID_FILE`,
    never committed). Not its path: two containers with volumes of their own mounted at one
    path (/workspace) are two workspaces, and one volume mounted by several machines is one."""
    path = Path(repo) / ID_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
    draft.write_text(uuid.uuid4().hex)
    try:
        os.link(draft, path)  # atomic: of two flows making it at once, one id wins
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


def lock_name(repo: Path) -> str:
    """``arcflow-workspace-<12 hex digits of the sha256 of the checkout's id>``."""
    digest = hashlib.sha256(workspace_id(repo).encode()).hexdigest()[:12]
    return f"{PREFIX}{digest}"


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("arcflow")


def _ensure_limit(client: SyncPrefectClient, name: str) -> None:
    """Create the global concurrency limit ``name`` (1 slot, no decay) unless it exists."""
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        with contextlib.suppress(ObjectAlreadyExists):  # another flow created it meanwhile
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, slot_decay_per_second=0.0)
            )


def _me(repo: Path, token: str) -> dict[str, Any]:
    """The holder record: which flow run (if any), where, since when."""
    record: dict[str, Any] = {
        "token": token,
        "repo": str(repo),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        flow = context.flow.name if context.flow is not None else "?"
        record["flow_run"] = f"{flow}/{context.flow_run.name}"
        record["flow_run_id"] = str(context.flow_run.id)
    return record


def describe(record: dict[str, Any] | None) -> str:
    """Who a holder record names, in a few words."""
    if not record:
        return "a holder that left no record (not an arcflow flow, or one that just started)"
    where = f"pid {record.get('pid')} on {record.get('host')}, since {record.get('since')}"
    if "flow_run" in record:
        return f"flow run {record['flow_run']!r} ({record['flow_run_id']}; {where})"
    return where


def holder(repo: Path) -> dict[str, Any] | None:
    """The record of whoever holds ``repo``'s lock now, or None when there is none."""
    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(lock_name(repo))
    value = variable.value if variable is not None else None
    return value if isinstance(value, dict) else None


def _write_record(client: SyncPrefectClient, name: str, record: dict[str, Any]) -> None:
    try:
        client.create_variable(VariableCreate(name=name, value=record, tags=RECORD_TAGS))
    except ObjectAlreadyExists:  # left by a holder that died
        client.update_variable(VariableUpdate(name=name, value=record))


def _drop_record(name: str, token: str) -> None:
    """Delete the holder record if it is still ours (a lost lease may have a new holder)."""
    try:
        with get_client(sync_client=True) as client:
            variable = client.read_variable_by_name(name)
            value = variable.value if variable is not None else None
            if isinstance(value, dict) and value.get("token") == token:
                client.delete_variable_by_name(name)
    except Exception as exc:  # the block's own outcome matters more than the record
        _logger().warning("workspace lock %s: could not drop the holder record: %s", name, exc)


def _locked(exc: BaseException) -> bool:
    """Whether an acquisition failed because the limit was full (HTTP 423 Locked)."""
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


@contextlib.contextmanager
def workspace_lock(repo: Path, timeout_s: float) -> Iterator[None]:
    """Hold ``repo``'s workspace lock for the block, waiting at most ``timeout_s`` seconds
    (0: fail at once when it is busy); raise :class:`WorkspaceBusy` naming the holder."""
    root = Path(repo).resolve()
    name = lock_name(root)
    log = _logger()
    if name in _held.get():
        log.info("workspace %s: already held by the enclosing flow run", root)
        yield
        return
    with get_client(sync_client=True) as client:
        _ensure_limit(client, name)
    context = FlowRunContext.get()
    lease_holder = (
        ConcurrencyLeaseHolder(type="flow_run", id=context.flow_run.id)
        if context is not None and context.flow_run is not None
        else None
    )
    hold = concurrency(
        name,
        timeout_seconds=timeout_s or None,
        max_retries=0 if timeout_s == 0 else None,  # one try: busy means fail
        lease_duration=LEASE_S,
        strict=True,  # it was just created: missing means something is wrong
        holder=lease_holder,
        raise_on_lease_renewal_failure=False,  # a server blip must not kill a training run
    )
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold)
        except (AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError) as exc:
            if isinstance(exc, ConcurrencySlotAcquisitionError) and not _locked(exc):
                raise
            waited = f"waited {timeout_s:g} s" if timeout_s else "did not wait"
            raise WorkspaceBusy(
                f"workspace {root} is busy: held by {describe(holder(root))}; "
                f"{waited} (flows.workspace_lock_timeout_s)",
                hint=f"rerun when it is done; if that holder is gone and the lock stays "
                f"(an ephemeral API has no lease expiry): prefect gcl update {name} "
                f"--active-slots 0",
            ) from exc
        token = uuid.uuid4().hex
        with get_client(sync_client=True) as client:
            _write_record(client, name, _me(root, token))
        log.info("workspace %s: lock %s held", root, name)
        reset = _held.set(_held.get() | {name})
        try:
            yield
        finally:
            _held.reset(reset)
            _drop_record(name, token)
