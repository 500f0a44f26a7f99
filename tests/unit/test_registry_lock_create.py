"""The promotion lock's one atomic write under a flaky connection: a create whose answer was
lost is retried, and an "already exists" then decides by the tags read back."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_ALREADY_EXISTS

from arcflow.errors import RegistryError
from arcflow.registry import lock
from arcflow.registry.lock import CREATE_ATTEMPTS, _create

RESET = "API request to http://127.0.0.1:5000/api/2.0/mlflow/registered-models/create failed "
RESET += "with exception ('Connection aborted.', ConnectionResetError(104, 'reset by peer'))"
NAME = "m.promotion-lock.00000001"
OURS = {"holder": "host:1:ab12cd34", "acquired_at": "1796689331.249"}


class FlakyRegistry:
    """Registered-model creates as a store answers them, with scripted transport failures:
    ``lost`` (the request never arrived) or ``landed`` (created; the answer was lost)."""

    def __init__(self, *failures: str, existing: dict[str, str] | None = None) -> None:
        self.failures = list(failures)
        self.models = {} if existing is None else {NAME: existing}
        self.creates = 0

    def create_registered_model(self, name: str, tags: dict, description: str = "") -> None:
        self.creates += 1
        failure = self.failures.pop(0) if self.failures else None
        if failure == "denied":
            raise MlflowException("no", error_code=PERMISSION_DENIED)
        if failure != "lost":
            if name in self.models:
                raise MlflowException(f"{name} exists", error_code=RESOURCE_ALREADY_EXISTS)
            self.models[name] = dict(tags)
        if failure is not None:
            raise MlflowException(RESET)  # what MLflow's REST client raises: INTERNAL_ERROR

    def get_registered_model(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(tags=self.models[name])


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock.time, "sleep", lambda seconds: None)


@pytest.mark.parametrize("failure", ["landed", "lost"])
def test_a_create_whose_answer_was_lost_is_ours_either_way(failure: str) -> None:
    registry = FlakyRegistry(failure)
    assert _create(registry, NAME, OURS) is True
    assert registry.models[NAME] == OURS and registry.creates == 2


def test_a_retry_that_finds_another_holders_generation_does_not_take_it() -> None:
    theirs = {"holder": "other:2:ffff0000", "acquired_at": "1796689330.000"}
    registry = FlakyRegistry("lost", existing=theirs)
    assert _create(registry, NAME, OURS) is False
    assert registry.models[NAME] == theirs


def test_an_existing_generation_on_the_first_try_is_someone_elses() -> None:
    registry = FlakyRegistry(existing=dict(OURS))  # even with equal tags: we never sent it
    assert _create(registry, NAME, OURS) is False and registry.creates == 1


def test_a_registry_that_keeps_failing_is_one_clear_error_after_the_retries() -> None:
    registry = FlakyRegistry(*["lost"] * CREATE_ATTEMPTS)
    with pytest.raises(RegistryError, match="cannot use the promotion lock: API request"):
        _create(registry, NAME, OURS)
    assert registry.creates == CREATE_ATTEMPTS


def test_a_refusal_is_not_retried() -> None:
    registry = FlakyRegistry("denied")
    with pytest.raises(RegistryError, match="cannot use the promotion lock: no"):
        _create(registry, NAME, OURS)
    assert registry.creates == 1
