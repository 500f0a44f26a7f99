"""The promotion decision, its report, and the provenance recorded on a logged model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from arcflow.config import ExportParams, RegistryParams
from arcflow.registry.gates import decide, headline_metrics
from arcflow.registry.report import comparison, promotion_report
from arcflow.tracking.provenance import (
    UNKNOWN,
    data_version,
    data_versions,
    git_commit,
    params_hash,
)

GATES = RegistryParams(
    primary_metric="eval.ijbc.tar_far_1e-4",
    min_improvement=0.01,
    max_regression=0.005,
    min_metrics={"eval.lfw.accuracy": 0.9},
)
PARITY = ExportParams()
HEADLINE = ["eval.lfw.accuracy", "eval.ijbc.tar_far_1e-4", "eval.cfp_fp.accuracy"]


def metrics() -> dict[str, float]:
    return {
        "eval.lfw.accuracy": 0.99,
        "eval.cfp_fp.accuracy": 0.95,
        "eval.ijbc.tar_far_1e-4": 0.90,
        "export.max_abs_diff": 1e-6,
        "export.min_cosine": 0.9999999,
        "export.onnx_latency_ms_median": 3.0,
    }


def failing(decision) -> list[tuple[str, str]]:
    return [(c.gate, c.metric) for c in decision.failures]


def test_first_model_is_judged_on_the_absolute_gates_only() -> None:
    decision = decide(metrics(), None, GATES, PARITY, HEADLINE)
    assert decision.promote
    assert {c.gate for c in decision.checks} == {"metrics", "parity", "absolute"}


def test_a_candidate_without_benchmark_metrics_is_rejected() -> None:
    only_export = {k: v for k, v in metrics().items() if k.startswith("export.")}
    decision = decide(only_export, None, GATES, PARITY, HEADLINE)
    assert not decision.promote
    assert ("metrics", "eval.*") in failing(decision)
    assert ("absolute", "eval.lfw.accuracy") in failing(decision)  # missing fails its gate


@pytest.mark.parametrize(
    ("key", "value"),
    [("export.max_abs_diff", 2e-4), ("export.min_cosine", 0.9999)],
)
def test_failed_parity_is_rejected(key: str, value: float) -> None:
    decision = decide({**metrics(), key: value}, None, GATES, PARITY, HEADLINE)
    assert failing(decision) == [("parity", key)]


def test_unrecorded_parity_is_rejected() -> None:
    m = metrics()
    del m["export.min_cosine"]
    decision = decide(m, None, GATES, PARITY, HEADLINE)
    assert failing(decision) == [("parity", "export.min_cosine")]
    assert "was not recorded" in decision.summary()


def test_latency_gate_only_when_configured() -> None:
    slow = {**metrics(), "export.onnx_latency_ms_median": 80.0}
    assert decide(slow, None, GATES, PARITY, HEADLINE).promote
    gated = GATES.model_copy(update={"max_latency_ms": 50.0})
    assert failing(decide(slow, None, gated, PARITY, HEADLINE)) == [
        ("latency", "export.onnx_latency_ms_median")
    ]


def test_primary_metric_must_improve_by_at_least_delta() -> None:
    champion = metrics()
    assert not decide(champion, champion, GATES, PARITY, HEADLINE).promote  # equal: no
    better = {**champion, "eval.ijbc.tar_far_1e-4": 0.91}
    assert decide(better, champion, GATES, PARITY, HEADLINE).promote  # +delta exactly
    short = {**champion, "eval.ijbc.tar_far_1e-4": 0.905}
    assert failing(decide(short, champion, GATES, PARITY, HEADLINE)) == [
        ("primary", "eval.ijbc.tar_far_1e-4")
    ]


def test_no_benchmark_may_regress_by_more_than_epsilon() -> None:
    champion = metrics()
    base = {**champion, "eval.ijbc.tar_far_1e-4": 0.95}
    within = {**base, "eval.cfp_fp.accuracy": 0.945}  # -epsilon exactly
    assert decide(within, champion, GATES, PARITY, HEADLINE).promote
    beyond = {**base, "eval.cfp_fp.accuracy": 0.944}
    assert failing(decide(beyond, champion, GATES, PARITY, HEADLINE)) == [
        ("regression", "eval.cfp_fp.accuracy")
    ]
    dropped = {k: v for k, v in base.items() if k != "eval.cfp_fp.accuracy"}
    decision = decide(dropped, champion, GATES, PARITY, HEADLINE)
    assert failing(decision) == [("regression", "eval.cfp_fp.accuracy")]
    assert "not measured" in decision.summary()


def test_benchmarks_the_champion_never_measured_are_not_regressions() -> None:
    champion = {k: v for k, v in metrics().items() if k != "eval.cfp_fp.accuracy"}
    candidate = {**metrics(), "eval.ijbc.tar_far_1e-4": 0.95, "eval.cfp_fp.accuracy": 0.1}
    assert decide(candidate, champion, GATES, PARITY, HEADLINE).promote


def test_regression_metrics_can_be_listed() -> None:
    gates = GATES.model_copy(update={"regression_metrics": ["eval.lfw.accuracy"]})
    champion = metrics()
    candidate = {**champion, "eval.ijbc.tar_far_1e-4": 0.95, "eval.cfp_fp.accuracy": 0.5}
    assert decide(candidate, champion, gates, PARITY, HEADLINE).promote


def test_a_champion_without_the_primary_metric_blocks_promotion() -> None:
    champion = {k: v for k, v in metrics().items() if k != "eval.ijbc.tar_far_1e-4"}
    decision = decide(metrics(), champion, GATES, PARITY, HEADLINE)
    assert failing(decision) == [("primary", "eval.ijbc.tar_far_1e-4")]
    assert "champion has no" in decision.summary()


def test_headline_metrics_cover_every_benchmark() -> None:
    names = headline_metrics()
    assert "eval.ijbc.tar_far_1e-4" in names and "eval.lfw.accuracy" in names
    assert len(names) == len(set(names)) == 13


def test_report_puts_candidate_beside_champion() -> None:
    champion = metrics()
    candidate = {**champion, "eval.ijbc.tar_far_1e-4": 0.95, "eval.cfp_fp.accuracy": 0.90}
    decision = decide(candidate, champion, GATES, PARITY, HEADLINE)
    text = promotion_report(
        "arcface",
        decision,
        candidate="version 3",
        champion="version 2",
        provenance={"candidate": {"git_commit": "abc"}, "champion": {}},
        dry_run=True,
    )
    assert "would be not promoted (dry run" in text
    assert "| primary | `eval.ijbc.tar_far_1e-4` | 0.95 | 0.9 | +0.05 | pass |" in text
    assert "| regression | `eval.cfp_fp.accuracy` | 0.9 | 0.95 | -0.05 | **FAIL** |" in text
    assert "**candidate**: git_commit `abc`" in text
    rows = json.loads(comparison(decision))
    assert ["regression", "eval.cfp_fp.accuracy", 0.9, 0.95, False] in rows


def test_params_hash_ignores_order_and_unlisted_sections() -> None:
    a = {"train": {"lr": 0.1, "epochs": 2}, "tracking": {"experiment": "x"}}
    b = {"tracking": {"experiment": "y"}, "train": {"epochs": 2, "lr": 0.1}}
    assert params_hash(a, ["train"]) == params_hash(b, ["train"])
    assert params_hash(a, ["train"]) != params_hash({"train": {"lr": 0.2, "epochs": 2}}, ["train"])
    assert len(params_hash(a, ["train"])) == 64


def test_data_versions_come_from_the_train_stage_of_dvc_lock(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: x\n    deps:\n"
        "    - path: data/aligned/train\n      hash: md5\n      md5: abc.dir\n"
        "    - path: arcflow/train\n      hash: md5\n      md5: def.dir\n"
    )
    versions = data_versions(lock)
    assert versions == {"data/aligned/train": "abc.dir"}
    assert data_version(versions) != data_version({"data/aligned/train": "abd.dir"})
    assert data_version({}) == UNKNOWN
    assert data_versions(tmp_path / "missing.lock") == {}
    (tmp_path / "bad.lock").write_text("stages: [")
    assert data_versions(tmp_path / "bad.lock") == {}


def test_git_commit_inside_and_outside_a_checkout(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == UNKNOWN
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
         "-m", "x"],
        cwd=tmp_path,
        check=True,
    )  # fmt: skip
    sha = git_commit(tmp_path)
    assert len(sha) == 40 and int(sha, 16) >= 0
