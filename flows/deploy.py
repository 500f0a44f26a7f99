"""The deployments: scheduled retraining and the on-demand pipeline.

    python -m flows.deploy serve [--repo .]                 # run them from this process
    python -m flows.deploy deploy --work-pool arcflow       # register them for workers

``arcflow-retrain/scheduled`` runs on ``flows.retrain_cron`` (weekly by default) in
``flows.timezone``, at most one at a time (a second run is cancelled, never run next to the
first in the same workspace); with ``flows.trigger_event`` set, that Prefect event starts it
too. ``arcflow-pipeline/on-demand`` has no schedule: start it from the UI or with
``prefect deployment run arcflow-pipeline/on-demand``. Both take the checkout as ``repo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from arcflow.config import FlowsParams, load_params
from arcflow.failures import one_line_errors
from flows.pipeline import pipeline
from flows.retrain import retrain

RETRAIN = "scheduled"
ON_DEMAND = "on-demand"
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def deployment_options(settings: FlowsParams, repo: Path) -> dict[str, dict]:
    """Keyword arguments of ``to_deployment`` / ``deploy`` for each flow."""
    triggers = []
    if settings.trigger_event:
        triggers.append(
            DeploymentEventTrigger(
                name="new data", expect={settings.trigger_event}, parameters={"repo": str(repo)}
            )
        )
    return {
        "retrain": {
            "name": RETRAIN,
            "schedules": [CronSchedule(cron=settings.retrain_cron, timezone=settings.timezone)],
            "concurrency_limit": ONE_AT_A_TIME,
            "parameters": {"repo": str(repo)},
            "triggers": triggers,
            "description": "retrain and promote when the watched data source changed",
            "tags": ["arcflow"],
        },
        "pipeline": {
            "name": ON_DEMAND,
            "concurrency_limit": ONE_AT_A_TIME,
            "parameters": {"repo": str(repo)},
            "description": "every DVC stage, then promotion",
            "tags": ["arcflow"],
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["serve", "deploy"])
    p.add_argument("--repo", type=Path, default=Path("."), help="the checkout the flows run in")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--work-pool", default="arcflow", help="deploy: the workers' pool")
    args = p.parse_args()
    repo = args.repo.resolve()
    settings = load_params(repo / args.params, ("flows",)).flows
    options = deployment_options(settings, repo)
    flows = {"retrain": retrain, "pipeline": pipeline}
    if args.mode == "serve":
        serve(*(flows[key].to_deployment(**kwargs) for key, kwargs in options.items()))
        return
    for key, kwargs in options.items():
        source = flows[key].from_source(
            source=str(repo), entrypoint=f"flows/{key}.py:{flows[key].fn.__name__}"
        )
        source.deploy(work_pool_name=args.work_pool, **kwargs)


if __name__ == "__main__":
    with one_line_errors():
        main()
