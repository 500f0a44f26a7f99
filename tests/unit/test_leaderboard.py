"""The leaderboard: each model's numbers as its eval.json has them, the published reference
rows, the set sizes, the best model per benchmark in bold."""

from __future__ import annotations

import pytest

from arcflow.evaluate.leaderboard import Entry, leaderboard_markdown, leaderboard_table
from arcflow.evaluate.published import PUBLISHED

pytestmark = pytest.mark.unit

OURS = Entry(
    "arcface (this pipeline)",
    "trained by this pipeline",
    "",
    {
        "lfw": {"accuracy": 0.9712, "val_far_1e-3": 0.5},
        "ijbc": {"tar_far_1e-4": 0.81},
        "ijbb": "not available",
    },
)
THEIRS = Entry(
    "ms1mv3_r100", "s3://models/r100.pth", "MIT", {"lfw": {"accuracy": 0.9951}, "ijbc": "x"}
)
SIZES = {"lfw": {"pairs": 6000, "threshold": 1.2}, "ijbc": {"n_images": 1200, "n_templates": 20}}


def test_rows_hold_each_models_metrics_references_and_set_sizes() -> None:
    table = leaderboard_table([OURS, THEIRS], SIZES)
    assert list(table) == ["model", "source", "license", "lfw.accuracy", "ijbc.tar_far_1e-4"]
    assert table["model"] == [
        "arcface (this pipeline)",
        "ms1mv3_r100",
        "ArcFace paper (R100, MS1MV2)",
        "insightface R100 (MS1MV2)",
        "set size",
    ]
    assert table["lfw.accuracy"][:2] == [0.9712, 0.9951]
    assert table["ijbc.tar_far_1e-4"][:2] == [0.81, None]  # not scored: no number made up
    assert table["lfw.accuracy"][2:4] == [
        PUBLISHED["lfw"]["accuracy"].paper,
        PUBLISHED["lfw"]["accuracy"].insightface,
    ]
    # 20 templates is not IJB-C's protocol: no published number beside it
    assert table["ijbc.tar_far_1e-4"][2:4] == [None, None]
    assert table["lfw.accuracy"][4] == "6,000 pairs"
    assert table["ijbc.tar_far_1e-4"][4] == "1,200 images, 20 templates"
    assert table["license"][:2] == ["", "MIT"]


def test_markdown_bolds_the_best_model_and_lists_what_nobody_scored() -> None:
    text = leaderboard_markdown([OURS, THEIRS], SIZES)
    lines = text.splitlines()
    assert "| model | source | licence | LFW accuracy | IJB-C tar_far_1e-4 |" in lines
    assert "| ms1mv3_r100 | s3://models/r100.pth | MIT | **0.9951** | – |" in lines
    assert (
        "| arcface (this pipeline) | trained by this pipeline | – | 0.9712 | **0.8100** |" in lines
    )
    assert "| ArcFace paper (R100, MS1MV2) | published | – | 0.9983 | – |" in lines
    assert lines[-1].startswith("Not available for any model: CFP-FP,")
    assert "IJB-B" in lines[-1] and " LFW," not in lines[-1]
