"""The settings #19 added are checked like every other: no coercion, no inf, no negatives."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from arcflow.config import FlowsParams
from arcflow.train_params import TrainParams

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("model", "key", "value"),
    [
        (TrainParams, "val_flip", "yes"),
        (TrainParams, "preload_mb", -1),
        (TrainParams, "preload_mb", "4"),
        (FlowsParams, "workspace_lock_timeout_s", float("inf")),
        (FlowsParams, "workspace_lock_timeout_s", -1),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(model, key: str, value: object) -> None:
    with pytest.raises(ValidationError, match=key):
        model(**{key: value})
