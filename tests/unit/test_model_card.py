"""The model card (and the flow's summary beside it): a metric the evaluate stage reports as
"below resolution" stays text, never a number; the margins stated are those trained with."""

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


@pytest.mark.parametrize(
    ("train", "says"),
    [
        ({"head": "arcface", "m": 0.5}, "arcface (s=64.0, m1=1, m2=0.5, m3=0)"),
        ({"head": "cosface", "m": None}, "cosface (s=64.0, m1=1, m2=0, m3=0.35)"),
        ({"head": "sphereface", "m1": None}, "sphereface (s=64.0, m1=1.35, m2=0, m3=0, psi"),
        ({"head": "combined"}, "combined (s=64.0, m1=1, m2=0.3, m3=0.2)"),
    ],
)
def test_the_model_card_states_the_margins_trained_with(train: dict, says: str) -> None:
    """A margin left null is the paper's value, and the card says which (SphereFace: m1)."""
    card = model_card(
        CardInputs(
            name="arcface",
            train={
                **TrainParams().model_dump(),
                "m": None,
                "m1": None,
                "m2": None,
                "m3": None,
                **train,
            },
            data_source="synthface (synthetic://synthface)",
            synthetic=True,
            metrics={},
            headlines={},
            sizes={},
            thresholds=None,
            provenance={},
            run_id="r",
            detector="retinaface_mnet",
        )
    )
    assert says in card
