"""The pipeline flow: every DVC stage as a Prefect task, then promotion, then a summary.

    python -m flows.pipeline [--repo .] [--no-promote]

The flow holds the checkout's workspace lock (:mod:`flows.workspace`) from start to end, so
no other flow works in the checkout meanwhile. The stages and their order come from dvc.yaml
(through DVC's stage graph). Each stage is one task running ``dvc repro --single-item <stage>``
(so an unchanged stage is skipped, and DVC says which), its output streamed into the run's log,
retried ``flows.stage_retries`` times. With a default DVC remote, the flow pulls before and
pushes after. A stage that still fails fails the flow, and nothing is promoted. Then
``arcflow promote`` (the registry's gates) on the model this run exported, and a markdown
artifact: the metrics, the comparison with the champion and the decision.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from arcflow.config import load_params
from arcflow.failures import one_line_errors
from flows import dvc_repo
from flows.workspace import workspace_lock

SUMMARY_KEY = "arcflow-pipeline"
MODEL_INFO = "models/onnx_model.json"  # the export stage's record of the logged model


@task(task_run_name="dvc-{action}")
def sync(repo: Path, action: str) -> None:
    """``dvc pull`` (missing objects tolerated: a first run has nothing to pull) or ``push``."""
    args = ["pull", "--allow-missing"] if action == "pull" else ["push"]
    dvc_repo.run(args, repo, get_run_logger().info)


@task(task_run_name="stage-{stage}")
def run_stage(repo: Path, stage: str) -> str:
    """One DVC stage; returns "ran" or "skipped" (DVC found it unchanged)."""
    return "ran" if dvc_repo.reproduce(repo, stage, get_run_logger().info) else "skipped"


@task
def promote_model(repo: Path, params_file: Path) -> dict[str, Any]:
    """The registry's gates on the model the export stage logged (``arcflow promote``)."""
    from arcflow.export.mlflow_model import read_model_id
    from arcflow.registry import promote
    from arcflow.tracking.run import client

    loaded = load_params(params_file, ("export", "registry", "tracking"))
    model_id = read_model_id(repo / MODEL_INFO)
    outcome = promote(client(loaded.tracking, repo), loaded.registry, loaded.export, model_id)
    get_run_logger().info(outcome.decision.summary())
    return {
        "promoted": outcome.promoted,
        "version": outcome.version,
        "champion_before": outcome.champion_before,
        "champion_after": outcome.champion_after,
        "report": outcome.report,
        "model_name": loaded.registry.model_name,
    }


def metrics_table(shown: dict[str, dict]) -> str:
    """The headline numbers of ``dvc metrics show`` as a markdown table."""
    rows = []
    evaluation = shown.get("metrics/eval.json", {})
    for bench, values in sorted(evaluation.items()):
        if isinstance(values, dict):
            picked = {k: v for k, v in values.items() if not k.endswith("_std")}
            cells = ", ".join(
                f"{k} {v}" if isinstance(v, str) else f"{k} {v:.4g}"  # "below resolution"
                for k, v in sorted(picked.items())[:6]
            )
            rows.append(f"| {bench} | {cells} |")
    export = shown.get("metrics/export.json", {})
    if export:
        rows.append(
            f"| export | max abs diff {export.get('max_abs_diff', float('nan')):.2g}, "
            f"{export.get('onnx_latency_ms_median', float('nan')):.3g} ms/image |"
        )
    return "\n".join(["| | metrics |", "|---|---|", *rows]) if rows else "(no metrics)"


def summary(stages: dict[str, str], shown: dict, promotion: dict | None) -> str:
    """The run's markdown artifact."""
    ran = ", ".join(f"{name} ({what})" for name, what in stages.items())
    lines = ["# ArcFlow pipeline", "", f"Stages: {ran}.", "", metrics_table(shown), ""]
    lines.append(promotion["report"] if promotion else "Promotion: not requested.")
    return "\n".join(lines)


@flow(name="arcflow-pipeline", log_prints=True)
def pipeline(repo: str = ".", promote: bool = True, params_file: str = "params.yaml") -> dict:
    """dvc pull → every stage of dvc.yaml in order → dvc push → promotion → summary."""
    root = Path(repo).resolve()
    params_path = root / params_file
    settings = load_params(params_path, ("flows",)).flows
    stage_task = run_stage.with_options(
        retries=settings.stage_retries, retry_delay_seconds=settings.retry_delay_s
    )
    with workspace_lock(root, settings.workspace_lock_timeout_s):
        remote = dvc_repo.default_remote(root)
        if remote:
            sync(root, "pull")
        stages = {name: stage_task(root, name) for name in dvc_repo.stage_order(root)}
        if remote:
            sync(root, "push")
        promotion = promote_model(root, params_path) if promote else None
        shown = dvc_repo.metrics(root)
    create_markdown_artifact(
        key=SUMMARY_KEY,
        markdown=summary(stages, shown, promotion),
        description="stages, metrics, promotion decision",
    )
    return {"stages": stages, "promotion": promotion}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repo", default=".", help="the checkout to run (default: here)")
    p.add_argument("--no-promote", action="store_true", help="stop after the stages")
    args = p.parse_args()
    load_params(Path(args.repo) / "params.yaml", ("flows",))  # a bad file fails before the flow
    pipeline(repo=args.repo, promote=not args.no_promote)


if __name__ == "__main__":
    with one_line_errors():
        main()
