"""The deployments: scheduled retraining and the on-demand pipeline.

    python -m flows.deploy serve [--repo .]                 # run them from this process
    python -m flows.deploy deploy --work-pool arcflow       # register them for workers
    python -m flows.deploy pool [--work-pool arcflow-k8s]   # create/update the Kubernetes pool
    python -m flows.deploy deploy --work-pool arcflow-k8s --image REF --gpus 8

``arcflow-retrain/scheduled`` runs on ``flows.retrain_cron`` (weekly by default) in
``flows.timezone``, at most one at a time (a second run is cancelled); with
``flows.trigger_event`` set, that Prefect event starts it too. ``arcflow-pipeline/on-demand``
has no schedule: start it from the UI or with ``prefect deployment run
arcflow-pipeline/on-demand``. Both take the checkout as ``repo``; two flows never work in one
checkout at once (flows/workspace.py).

On a process pool the flows run in the checkout ``--repo``. On a Kubernetes pool (its base job
template: infra/k8s/base-job-template.json) each flow run is a Job of the training image with
the workspace volume at /workspace; ``--image``, ``--gpus`` and ``--workspace-pvc`` become the
deployments' job variables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import DeploymentApplyError, RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.types.entrypoint import EntrypointType

from arcflow.config import FlowsParams, load_params
from arcflow.errors import ConfigError, first_line
from arcflow.failures import one_line_errors
from flows.pipeline import pipeline
from flows.retrain import retrain

RETRAIN = "scheduled"
ON_DEMAND = "on-demand"
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)
FLOWS = {"retrain": retrain, "pipeline": pipeline}

PROCESS_POOL = "arcflow"
KUBERNETES = "kubernetes"
KUBERNETES_POOL = "arcflow-k8s"
TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "k8s" / "base-job-template.json"
# where the Kubernetes Jobs mount the workspace volume (the training image's WORKDIR)
K8S_WORKSPACE = Path("/workspace")


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


def kubernetes_job_variables(
    image: str | None, gpus: int | None, workspace_pvc: str | None
) -> dict[str, Any]:
    """The job variables of a Kubernetes deployment; what is None keeps the pool's default."""
    given = {"image": image, "gpus": gpus, "workspace_pvc": workspace_pvc}
    return {name: value for name, value in given.items() if value is not None}


def kubernetes_deployments(
    settings: FlowsParams, job_variables: dict[str, Any]
) -> list[RunnerDeployment]:
    """Both deployments for a Kubernetes pool: module entrypoints (no code upload; the pod
    imports the flows from its workspace checkout) and ``repo`` the workspace volume."""
    options = deployment_options(settings, K8S_WORKSPACE)
    return [
        FLOWS[key].to_deployment(
            entrypoint_type=EntrypointType.MODULE_PATH, job_variables=job_variables, **kwargs
        )
        for key, kwargs in options.items()
    ]


def apply_deployments(deployments: list[RunnerDeployment], pool: str) -> list[UUID]:
    """Register ``deployments`` on the work pool ``pool``; one the server refuses (e.g. a job
    variable the pool's template does not allow) is a ConfigError."""
    ids = []
    for deployment in deployments:
        name = f"{deployment.flow_name}/{deployment.name}"
        try:
            ids.append(deployment.apply(work_pool_name=pool))
        except DeploymentApplyError as exc:
            raise ConfigError(
                f"deployment {name}: {first_line(exc)}",
                hint=f"compare with the pool's variables: prefect work-pool inspect {pool}",
            ) from exc
        print(f"deployed {name} to work pool {pool!r}")
    return ids


def load_template(path: Path) -> dict[str, Any]:
    """A base job template file: JSON with ``job_configuration`` and ``variables``."""
    try:
        template = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})", hint="check the file") from exc
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= set(template):
        raise ConfigError(
            f"{path}: a base job template needs 'job_configuration' and 'variables'",
            hint="start from infra/k8s/base-job-template.json",
        )
    return template


def apply_kubernetes_pool(name: str, template: dict[str, Any]) -> str:
    """Create the Kubernetes work pool ``name`` with ``template``, or replace the template of
    an existing one (its pause state and limits stay); 'created' or 'updated'."""
    with get_client(sync_client=True) as client:
        try:
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(
                    WorkPoolCreate(name=name, type=KUBERNETES, base_job_template=template)
                )
                return "created"
            if pool.type != KUBERNETES:
                raise ConfigError(
                    f"work pool {name!r} is a {pool.type!r} pool, not {KUBERNETES!r}",
                    hint="choose another --work-pool, or delete it: prefect work-pool delete NAME",
                )
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
            return "updated"
        except PrefectHTTPStatusError as exc:
            raise ConfigError(
                f"the Prefect server refused the base job template: {first_line(exc)}",
                hint="check the template's variables and placeholders",
            ) from exc


def work_pool_type(name: str) -> str:
    """The type of the work pool ``name`` on the Prefect server."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name).type
        except ObjectNotFound:
            raise ConfigError(
                f"work pool {name!r} does not exist",
                hint="a process pool appears when its worker starts; a Kubernetes pool: "
                "python -m flows.deploy pool",
            ) from None


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["serve", "deploy", "pool"])
    p.add_argument("--repo", type=Path, default=Path("."), help="the checkout the flows run in")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument(
        "--work-pool",
        help=f"deploy: the workers' pool (default {PROCESS_POOL}); "
        f"pool: the Kubernetes pool to create (default {KUBERNETES_POOL})",
    )
    p.add_argument("--template", type=Path, default=TEMPLATE, help="pool: base job template")
    k8s = p.add_argument_group("deploy to a Kubernetes pool (default: the pool's template)")
    k8s.add_argument("--image", help="the training image (infra/Dockerfile) in a registry")
    k8s.add_argument("--gpus", type=_non_negative, help="GPUs per flow run (nvidia.com/gpu)")
    k8s.add_argument("--workspace-pvc", help="PersistentVolumeClaim mounted at /workspace")
    args = p.parse_args()
    if args.mode == "pool":
        pool = args.work_pool or KUBERNETES_POOL
        done = apply_kubernetes_pool(pool, load_template(args.template))
        print(f"{done} work pool {pool!r} ({KUBERNETES}) from {args.template}")
        return
    repo = args.repo.resolve()
    settings = load_params(repo / args.params, ("flows",)).flows
    if args.mode == "serve":
        options = deployment_options(settings, repo)
        serve(*(FLOWS[key].to_deployment(**kwargs) for key, kwargs in options.items()))
        return
    pool = args.work_pool or PROCESS_POOL
    job_variables = kubernetes_job_variables(args.image, args.gpus, args.workspace_pvc)
    if work_pool_type(pool) == KUBERNETES:
        apply_deployments(kubernetes_deployments(settings, job_variables), pool)
        return
    if job_variables:
        raise ConfigError(
            f"--image, --gpus and --workspace-pvc are for Kubernetes pools; {pool!r} is not one",
            hint="deploy to the pool made by `python -m flows.deploy pool`",
        )
    for key, kwargs in deployment_options(settings, repo).items():
        source = FLOWS[key].from_source(
            source=str(repo), entrypoint=f"flows/{key}.py:{FLOWS[key].fn.__name__}"
        )
        source.deploy(work_pool_name=pool, **kwargs)


if __name__ == "__main__":
    with one_line_errors():
        main()
