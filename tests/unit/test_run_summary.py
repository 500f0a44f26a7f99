"""`arcflow summary`, the end of `make run`: headline numbers, not `dvc metrics show`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from arcflow.cli import app
from arcflow.errors import ArcFlowError
from arcflow.run_summary import (
    EVAL,
    EVAL_DETAILS,
    EXPORT,
    HEADLINES,
    MODEL,
    TRAIN,
    RunOutputs,
    read_outputs,
    summarize,
)

pytestmark = pytest.mark.unit

# Shaped like the evaluate stage's metrics/eval.json (keys sorted, as it writes them).
EVAL_JSON: dict[str, Any] = {
    "agedb_30": {"accuracy": 0.8883333333333333, "accuracy_std": 0.051126205500593214},
    "calfw": "not available",
    "cfp_fp": {"accuracy": 0.9583333333333333, "accuracy_std": 0.015365907428821471, "auc": 0.99},
    "ijbb": "not available",
    "ijbc": {
        "1n_rank1": 1.0,
        "plain_tar_far_1e-4": 0.97,
        "resolution_far": 5.05050505050505e-05,
        "tar_far_1e-4": 0.9875,
        "tar_far_1e-5": "below resolution",
        "tar_far_1e-6": "below resolution",
    },
    "lfw": {"accuracy": 0.9949999999999999, "accuracy_std": 0.0076376261582597575},
    "megaface": {
        "rank1": 0.9455357142857143,
        "rank1_10": 0.9985714285714286,
        "rank1_100": 0.9867857142857143,
        "rank1_1000": 0.9455357142857143,
        "tar_far_1e-6": 0.5264285714285715,
    },
    "ytf": {"accuracy": 0.9966666666666667, "accuracy_std": 0.009999999999999998},
}
TRAIN_JSON = {
    "final_loss": 0.7289672493934631,
    "images_per_second": 84.88565376796348,
    "steps": 600,
}
EXPORT_JSON = {
    "min_cosine": 0.9999998807907104,
    "onnx_latency_ms_median": 2.194122499986406,
    "opset": 18,
    "torch_latency_ms_median": 4.551873500076908,
}
MODEL_JSON = {"model_id": "m-971c", "model_uri": "models:/m-971c"}


def outputs(**changes: Any) -> RunOutputs:
    base: dict[str, Any] = dict(
        eval=EVAL_JSON,
        train=TRAIN_JSON,
        export=EXPORT_JSON,
        model=MODEL_JSON,
        reports={"reports/evaluation.md": True, "reports/leaderboard.md": False},
    )
    return RunOutputs(**{**base, **changes})


def line_of(text: str, title: str) -> str:
    [line] = [line for line in text.splitlines() if line.strip().startswith(f"{title} ")]
    return line


def test_headline_numbers_in_percent_in_the_papers_order() -> None:
    text = summarize(outputs(), tracking_uri="sqlite:////repo/mlflow.db")
    assert line_of(text, "LFW").split(None, 1)[1] == "accuracy 99.50 ± 0.76"
    assert line_of(text, "CFP-FP").endswith("accuracy 95.83 ± 1.54")
    assert line_of(text, "AgeDB-30").endswith("accuracy 88.83 ± 5.11")
    assert line_of(text, "YTF").endswith("accuracy 99.67 ± 1.00")
    assert line_of(text, "MegaFace").endswith("rank-1 94.55 @ 1,000 distractors")
    titles = [line.split()[0] for line in text.splitlines()[1:7]]
    assert titles == ["LFW", "CFP-FP", "AgeDB-30", "YTF", "MegaFace", "IJB-C"]
    assert "  not available: CALFW, IJB-B\n" in text
    assert "Training (metrics/train.json): 600 steps, final loss 0.7290, 84.9 images/s\n" in text
    assert (
        "Export (metrics/export.json): ONNX opset 18, parity min cosine 0.9999999, "
        "2.19 ms median (PyTorch 4.55 ms)\n"
    ) in text
    assert "MLflow model: models:/m-971c (tracking store sqlite:////repo/mlflow.db)\n" in text
    assert text.endswith("Reports: reports/evaluation.md, reports/leaderboard.md (not written)\n")
    assert len(text.splitlines()) <= 12


def test_below_resolution_is_said_with_the_far_the_set_resolves() -> None:
    ijbc = line_of(summarize(outputs()), "IJB-C")
    assert ijbc.endswith(
        "TAR@FAR=1e-4 98.75, TAR@FAR=1e-5 below resolution (the set resolves FAR ≥ 5.1e-05)"
    )
    bare = {**EVAL_JSON["ijbc"]}
    del bare["resolution_far"]
    ijbc = line_of(summarize(outputs(eval={"ijbc": bare})), "IJB-C")
    assert ijbc.endswith("TAR@FAR=1e-4 98.75, TAR@FAR=1e-5 below resolution")


def test_megaface_distractors_from_the_details_when_eval_has_no_lists() -> None:
    megaface = {"rank1": 0.5}
    details = {"megaface": {"n_impostor": 800_000, "n_probes": 80}}
    text = summarize(outputs(eval={"megaface": megaface}, eval_details=details))
    assert line_of(text, "MegaFace").endswith("rank-1 50.00 @ 10,000 distractors")
    assert line_of(summarize(outputs(eval={"megaface": megaface})), "MegaFace").endswith(
        "rank-1 50.00"
    )


def test_missing_metrics_and_unknown_benchmarks_are_visible() -> None:
    text = summarize(outputs(eval={"lfw": {"auc": 0.9}, "new_set": {"x": 1.0}}, train={}))
    assert line_of(text, "LFW").endswith("accuracy –")
    assert "  also in metrics/eval.json: new_set\n" in text
    assert "Training (metrics/train.json): – steps, final loss –, – images/s\n" in text


def write_run(root: Path, skip: Path | None = None) -> None:
    documents = {EVAL: EVAL_JSON, TRAIN: TRAIN_JSON, EXPORT: EXPORT_JSON, MODEL: MODEL_JSON}
    for path, document in documents.items():
        if path != skip:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("missing", "stage"),
    [(EVAL, "evaluate"), (TRAIN, "train"), (EXPORT, "export"), (MODEL, "export")],
)
def test_a_missing_output_names_the_file_and_how_to_produce_it(
    tmp_path: Path, missing: Path, stage: str
) -> None:
    write_run(tmp_path, skip=missing)
    with pytest.raises(ArcFlowError) as caught:
        read_outputs(tmp_path)
    message = str(caught.value)
    assert (
        message
        == f"{missing} not found: the {stage} stage writes it; run `dvc repro` (or `make run`)"
    )


def test_a_broken_output_is_named(tmp_path: Path) -> None:
    write_run(tmp_path)
    (tmp_path / EXPORT).write_text("{truncated")
    with pytest.raises(ArcFlowError, match=r"^metrics/export.json is not valid JSON \("):
        read_outputs(tmp_path)
    (tmp_path / EXPORT).write_text("[1, 2]")
    with pytest.raises(ArcFlowError, match=r"^metrics/export.json is not a JSON object"):
        read_outputs(tmp_path)


def test_read_outputs_reads_details_and_which_reports_exist(tmp_path: Path) -> None:
    write_run(tmp_path)
    (tmp_path / EVAL_DETAILS).write_text(json.dumps({"lfw": {"pairs": 600}}))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "leaderboard.md").write_text("# Leaderboard\n")
    run = read_outputs(tmp_path)
    assert run.eval == EVAL_JSON and run.model == MODEL_JSON
    assert run.eval_details == {"lfw": {"pairs": 600}}
    assert run.reports == {"reports/evaluation.md": False, "reports/leaderboard.md": True}


def test_the_committed_outputs_summarize(repo_root: Path) -> None:
    """metrics/*.json as the default pipeline commits them: every scored benchmark shows a
    number (so the summary follows the files' real key names)."""
    run = read_outputs(repo_root)
    text = summarize(run)
    for name, metrics in run.eval.items():
        if isinstance(metrics, dict) and name in HEADLINES:
            assert "–" not in line_of(text, HEADLINES[name][0]), name
    assert f"MLflow model: {run.model['model_uri']}\n" in text


def test_cli_prints_the_summary_or_one_error_line(
    tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    missing = CliRunner().invoke(app, ["summary"])
    assert missing.exit_code == 1
    assert missing.output.strip().splitlines() == [
        "error: metrics/eval.json not found: the evaluate stage writes it; "
        "run `dvc repro` (or `make run`)"
    ]
    write_run(tmp_path)
    done = CliRunner().invoke(app, ["summary"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("Benchmarks (metrics/eval.json; values in %):\n")
    assert "MLflow model: models:/m-971c (tracking store sqlite:///" in done.output
