"""Attack: many promoters on the real `mlflow server` at once, a stale lock left by a dead
holder, and every lock step slowed at random to force interleavings. At most one holder is ever
inside, no update is lost, the stale lock is broken, and every audit entry is kept."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from arcflow.registry import lock as lock_module
from arcflow.registry.lock import is_free, lock_name, registry_lock
from arcflow.registry.store import append_event, audit_log

pytestmark = [pytest.mark.attack, pytest.mark.integration, pytest.mark.slow]

PROMOTERS = 6
ROUNDS = 20  # 20 in a row in one run (#17); each: 6 promoters, every lock step jittered


@pytest.fixture(scope="module")
def clients(mlflow_server: str) -> list[object]:
    from mlflow import MlflowClient

    return [MlflowClient(tracking_uri=mlflow_server) for _ in range(PROMOTERS)]


@pytest.fixture()
def jittered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sleep 0–40 ms before every registry call the lock makes: other orders of the steps."""
    for name in ("_state", "_create", "_delete"):
        real = getattr(lock_module, name)

        def slowed(*args, _real=real, **kwargs):
            time.sleep(random.random() * 0.04)
            return _real(*args, **kwargs)

        monkeypatch.setattr(lock_module, name, slowed)


def _stale_generation(client, model: str) -> None:
    """What a promoter that died holding the lock leaves: an open generation, long held."""
    client.create_registered_model(
        f"{lock_name(model)}.00000001",
        tags={"holder": "dead-host:1:0", "acquired_at": f"{time.time() - 3600:.3f}"},
    )


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_one_holder_at_a_time_no_lost_update_no_lost_audit_entry(
    round_: int, clients, jittered
) -> None:
    model = f"lock-stress-{uuid.uuid4().hex[:8]}"
    client = clients[0]
    client.create_registered_model(model, tags={"counter": "0"})
    _stale_generation(client, model)
    inside: list[str] = []
    overlaps: list[tuple[str, str]] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def promoter(k: int) -> None:
        try:
            with registry_lock(clients[k], model, timeout_s=120, ttl_s=60, poll_s=0.05) as held:
                with guard:
                    overlaps.extend((other, held.holder) for other in inside)
                    inside.append(held.holder)
                held.check()
                count = int(clients[k].get_registered_model(model).tags["counter"])
                time.sleep(random.random() * 0.03)  # read-modify-write: loses updates if shared
                clients[k].set_registered_model_tag(model, "counter", str(count + 1))
                append_event(clients[k], model, {"event": "promoted", "by": held.holder})
                with guard:
                    inside.remove(held.holder)
        except BaseException as exc:  # reported below, with the round
            errors.append(exc)

    threads = [threading.Thread(target=promoter, args=(k,)) for k in range(PROMOTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not overlaps, overlaps
    assert client.get_registered_model(model).tags["counter"] == str(PROMOTERS)
    events = audit_log(client, model)
    assert len(events) == PROMOTERS and len({e["by"] for e in events}) == PROMOTERS
    assert is_free(client, model)
    names = [m.name for m in client.search_registered_models(f"name LIKE '{lock_name(model)}.%'")]
    assert len(names) <= 6  # old generations are pruned, not piled up
