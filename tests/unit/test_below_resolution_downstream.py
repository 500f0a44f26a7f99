"""A metric the evaluate stage reports as "below resolution" (a string, never a number) is
carried as such by everything downstream: the model card and the flow's summary."""

from __future__ import annotations

import pytest

from arcflow.config import TrainParams
from arcflow.evaluate.resolution import BELOW_RESOLUTION
from arcflow.serve.card import CardInputs, model_card
from flows.pipeline import metrics_table

pytestmark = pytest.mark.unit

EVALUATION = {
    "lfw": {"accuracy": 0.995},
    "ijbc": {"tar_far_1e-4": BELOW_RESOLUTION, "tar_far_1e-2": 0.97, "resolution_far": 1e-3},
    "cplfw": "not available",
}


def test_the_model_card_says_below_resolution() -> None:
    card = model_card(
        CardInputs(
            name="arcface",
            train=TrainParams().model_dump(),
            data_source="synthface (synthetic://synthface)",
            synthetic=True,
            metrics=EVALUATION,
            headlines={"lfw": ("LFW", "accuracy"), "ijbc": ("IJB-C", "tar_far_1e-4")},
            sizes={"ijbc": {"n_genuine": 20, "n_impostor": 760}},
            thresholds=None,
            provenance={},
            run_id="r",
            detector="retinaface_mnet",
        )
    )
    assert "| LFW | accuracy | 0.995 |" in card
    assert f"| IJB-C | tar_far_1e-4 | {BELOW_RESOLUTION} | 20 genuine, 760 impostor |" in card


def test_the_flow_summary_says_below_resolution() -> None:
    table = metrics_table({"metrics/eval.json": EVALUATION})
    assert f"tar_far_1e-4 {BELOW_RESOLUTION}" in table and "tar_far_1e-2 0.97" in table
