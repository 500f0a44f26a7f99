"""infra/k8s/: the Kubernetes work pool's base job template and the cluster manifests.

No cluster here. A Job is rendered the way the Kubernetes worker renders it (prefect's
templating in ``from_template_and_values``, ``prepare_for_flow_run``, then the worker's
``_create_job`` with the Kubernetes API replaced by a recorder), and every manifest is built
into the ``kubernetes_asyncio`` models field by field: a key the API does not define, a
wrong type or a missing required field fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, cast
from uuid import uuid4

import prefect_kubernetes.worker as k8s_worker
import pytest
import yaml
from kubernetes_asyncio.client import models as k8s_models
from prefect.client.schemas.objects import FlowRun
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.templating import find_placeholders
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from arcflow.config import load_params
from arcflow.errors import ConfigError
from flows import deploy

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_AUTH_STRING",
)
# what a worker in the cluster has in its environment (worker.yaml)
WORKER_API_URL = "http://prefect-server.arcflow.svc:4200/api"
AUTH_STRING = "arcflow:worker-secret-value"
# prefect-kubernetes requires these in the *pod* spec (its manifest check); the API server
# drops them as unknown fields (a warning), so the schema check leaves them out
PREFECT_POD_SPEC_FIELDS = {"completions": 1, "parallelism": 1}
# resource.Quantity: a string or a number in JSON
QUANTITY_FIELDS = {"limits", "requests", "size_limit"}
NATIVE: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str,),
    "object": (object,),
}


@cache
def template() -> dict[str, Any]:
    return json.loads((K8S / "base-job-template.json").read_text())


@cache
def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object of infra/k8s/*.yaml, by kind."""
    docs = [yaml.safe_load_all(path.read_text()) for path in sorted(K8S.glob("*.yaml"))]
    return {obj["kind"]: obj for objects in docs for obj in objects}


def defaults() -> dict[str, Any]:
    return {k: v.get("default") for k, v in template()["variables"]["properties"].items()}


def worker_container() -> dict[str, Any]:
    return k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def to_model(data: Any, kind: str, path: str = "$", quantity: bool = False) -> Any:
    """``data`` (parsed JSON) as the kubernetes_asyncio model ``kind``, checked strictly."""
    if kind.startswith("list["):
        assert isinstance(data, list), f"{path}: expected a list, got {data!r}"
        return [to_model(item, kind[5:-1], f"{path}[{i}]", quantity) for i, item in enumerate(data)]
    if kind.startswith("dict("):
        assert isinstance(data, dict), f"{path}: expected a mapping, got {data!r}"
        value_kind = kind[kind.index(",") + 1 : -1].strip()
        return {k: to_model(v, value_kind, f"{path}.{k}", quantity) for k, v in data.items()}
    if kind in NATIVE:
        allowed = (str, int) if quantity and kind == "str" else NATIVE[kind]
        wrong_bool = isinstance(data, bool) and kind != "bool" and kind != "object"
        assert isinstance(data, allowed) and not wrong_bool, f"{path}: {data!r} is not {kind}"
        return data
    cls = getattr(k8s_models, kind)
    assert isinstance(data, dict), f"{path}: expected a {kind} object, got {data!r}"
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    assert not unknown, f"{path}: {kind} has no field(s) {unknown}"
    values = {
        fields[key]: to_model(
            value, cls.openapi_types[fields[key]], f"{path}.{key}", fields[key] in QUANTITY_FIELDS
        )
        for key, value in data.items()
    }
    return cls(**values)  # the model refuses a missing required field (ValueError)


def validate_job(manifest: dict[str, Any]) -> k8s_models.V1Job:
    """The Job as the API's V1Job, after checking prefect-kubernetes' two pod-spec fields."""
    manifest = copy.deepcopy(manifest)
    pod = manifest["spec"]["template"]["spec"]
    for key, value in PREFECT_POD_SPEC_FIELDS.items():
        assert pod.pop(key) == value
    return to_model(manifest, "V1Job")


class RecordingBatchApi:
    """Stands in for the Kubernetes BatchV1Api: records the Job the worker submits."""

    submitted: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, client: object) -> None:
        pass

    async def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> Any:
        RecordingBatchApi.submitted.append((namespace, copy.deepcopy(body)))
        meta = SimpleNamespace(name=f"{body['metadata']['generateName']}x1", namespace=namespace)
        return SimpleNamespace(metadata=meta)


class NoApi:
    """A Prefect client that fails on use: the template has no block or variable references,
    so rendering it needs no API."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering the template used the Prefect API ({name})")


Render = Callable[..., dict[str, Any]]


@pytest.fixture
def render(monkeypatch: pytest.MonkeyPatch) -> Render:
    """The Job manifest a worker configured like worker.yaml submits for ``job_variables``."""

    def submit(job_variables: dict[str, Any], *, worker_settings: bool = True) -> dict[str, Any]:
        for item in worker_container()["env"]:
            if item["name"].startswith("PREFECT_INTEGRATIONS_") and "value" in item:
                if worker_settings:
                    monkeypatch.setenv(item["name"], item["value"])
                else:
                    monkeypatch.delenv(item["name"], raising=False)
        monkeypatch.setattr(k8s_worker, "BatchV1Api", RecordingBatchApi)
        RecordingBatchApi.submitted = []

        async def run() -> None:
            config = await KubernetesWorkerJobConfiguration.from_template_and_values(
                template(), job_variables, client=cast(Any, NoApi())
            )
            config.prepare_for_flow_run(FlowRun(flow_id=uuid4(), name="brave-otter"))
            await KubernetesWorker(work_pool_name=deploy.KUBERNETES_POOL)._create_job(
                config, client=None
            )

        settings = {PREFECT_API_URL: WORKER_API_URL, PREFECT_API_AUTH_STRING: AUTH_STRING}
        with temporary_settings(updates=settings):
            asyncio.run(run())
        [(namespace, manifest)] = RecordingBatchApi.submitted
        assert namespace == manifest["metadata"]["namespace"]
        return manifest

    return submit


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def env_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = pod_of(manifest)["containers"][0]["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate environment entries: {names}"
    return {e["name"]: e for e in entries}


def mounts_by_path(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mount path -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


# --- the template itself ---------------------------------------------------------------


def test_template_extends_prefect_kubernetes_default_and_uses_every_variable() -> None:
    ours = template()["variables"]["properties"]
    stock = KubernetesWorker.get_default_base_job_template()["variables"]["properties"]
    assert set(stock) <= set(ours), f"dropped: {sorted(set(stock) - set(ours))}"
    used = {p.name for p in find_placeholders(template()["job_configuration"])}
    # a placeholder without a variable renders to nothing; a variable without one is ignored
    assert used == set(ours), f"undeclared {used - set(ours)}, unused {set(ours) - used}"
    assert ours["gpus"] == {**ours["gpus"], "type": "integer", "minimum": 0, "default": 1}


# --- the rendered Job ------------------------------------------------------------------


def test_default_job_is_a_valid_batch_v1_job(render: Render) -> None:
    manifest = render({})
    job = validate_job(manifest)
    assert (job.api_version, job.kind) == ("batch/v1", "Job")
    assert job.metadata.namespace == "arcflow"
    assert job.metadata.generate_name == "brave-otter-"
    assert job.spec.backoff_limit == 0
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never"
    assert pod.automount_service_account_token is False
    [container] = pod.containers
    assert container.image == "arcflow-trainer:local"
    assert container.args == ["prefect", "flow-run", "execute"]
    assert container.working_dir == "/workspace"
    assert container.env, "no environment"
    # no `command`: the image's entrypoint makes the checkout in /workspace, then runs args
    assert container.command is None
    assert pod.init_containers is None


def test_schema_check_fails_on_unknown_fields_and_missing_required_ones(render: Render) -> None:
    manifest = render({})
    misplaced = copy.deepcopy(manifest)
    pod_of(misplaced)["containers"][0]["gpus"] = 1
    with pytest.raises(AssertionError, match=r"V1Container has no field\(s\) \['gpus'\]"):
        validate_job(misplaced)
    nameless = copy.deepcopy(manifest)
    del pod_of(nameless)["volumes"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        validate_job(nameless)


@pytest.mark.parametrize("gpus", [0, 1, 8])
def test_gpu_limit_is_the_requested_count(render: Render, gpus: int) -> None:
    manifest = render({"gpus": gpus})
    container = validate_job(manifest).spec.template.spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == gpus
    # an extended resource's request defaults to its limit; a different one is invalid
    assert "nvidia.com/gpu" not in (container.resources.requests or {})


def test_one_gpu_and_cpu_memory_limits_by_default(render: Render) -> None:
    limits = pod_of(render({}))["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 1}
    custom = pod_of(render({"memory_limit": "64Gi", "cpu_limit": "16"}))
    assert custom["containers"][0]["resources"]["limits"] == {
        "cpu": "16",
        "memory": "64Gi",
        "nvidia.com/gpu": 1,
    }


@pytest.mark.parametrize("pvc", [None, "team-workspace"])
def test_workspace_volume_at_workspace_and_memory_shm(render: Render, pvc: str | None) -> None:
    manifest = render({} if pvc is None else {"workspace_pvc": pvc})
    validate_job(manifest)
    pod = pod_of(manifest)
    mounts = mounts_by_path(pod["containers"][0], pod)
    claim = pvc or defaults()["workspace_pvc"]
    assert mounts["/workspace"]["persistentVolumeClaim"] == {"claimName": claim}
    assert mounts["/dev/shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert str(deploy.K8S_WORKSPACE) == "/workspace"


def test_credentials_come_from_secrets_never_as_values(render: Render) -> None:
    manifest = render({})
    validate_job(manifest)
    env = env_of(manifest)
    for name in CREDENTIALS:
        assert "value" not in env[name], f"{name} has a literal value"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "arcflow-credentials", "key": name}
    assert AUTH_STRING not in json.dumps(manifest)
    # the worker's API address is passed on; settings come from the ConfigMap
    assert env["PREFECT_API_URL"] == {"name": "PREFECT_API_URL", "value": WORKER_API_URL}
    container = pod_of(manifest)["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "arcflow-config"}}]
    other = env_of(render({"credentials_secret": "team-creds"}))
    secrets = {n: other[n]["valueFrom"]["secretKeyRef"]["name"] for n in CREDENTIALS}
    # the auth string is the worker's own: from the secret the worker names (worker.yaml)
    assert secrets.pop("PREFECT_API_AUTH_STRING") == "arcflow-credentials"
    assert set(secrets.values()) == {"team-creds"}


def test_without_the_worker_secret_settings_the_auth_string_would_be_in_clear(
    render: Render,
) -> None:
    """Why worker.yaml sets PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_*:
    the worker passes its own settings on and they replace the template's secretKeyRef."""
    auth = env_of(render({}, worker_settings=False))["PREFECT_API_AUTH_STRING"]
    assert auth == {"name": "PREFECT_API_AUTH_STRING", "value": AUTH_STRING}


def test_node_selector_and_tolerations_are_optional(render: Render) -> None:
    pod = pod_of(render({}))
    assert "nodeSelector" not in pod
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    tolerations = [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    manifest = render({"node_selector": selector, "tolerations": tolerations})
    pod = validate_job(manifest).spec.template.spec
    assert pod.node_selector == selector
    assert [t.key for t in pod.tolerations] == ["dedicated"]


def test_image_runs_as_the_volume_group_in_the_mounted_workspace() -> None:
    """The entrypoint of the image (running as ARCFLOW_UID) checks out into /workspace: the
    volume must be writable by that user, and /workspace must be where the image works."""
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    uid = re.search(r"ARG ARCFLOW_UID=(\d+)", dockerfile)
    assert uid, "infra/Dockerfile no longer declares ARCFLOW_UID"
    assert re.search(r"^WORKDIR /workspace$", dockerfile, re.MULTILINE)
    assert re.search(r"^ENTRYPOINT ", dockerfile, re.MULTILINE)
    pod = template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == int(uid.group(1))


# --- the cluster manifests ---------------------------------------------------------------

API_VERSIONS = {
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "Deployment": "apps/v1",
    "PersistentVolumeClaim": "v1",
}


def test_cluster_manifests_are_valid_and_agree_with_the_template() -> None:
    objects = k8s_objects()
    assert set(objects) == set(API_VERSIONS)
    for kind, obj in objects.items():
        assert obj["apiVersion"] == API_VERSIONS[kind]
        to_model(obj, f"V1{kind}")
        assert obj["metadata"]["namespace"] == defaults()["namespace"], kind
    assert objects["PersistentVolumeClaim"]["metadata"]["name"] == defaults()["workspace_pvc"]
    binding = objects["RoleBinding"]
    assert binding["subjects"][0]["name"] == objects["ServiceAccount"]["metadata"]["name"]
    assert binding["roleRef"]["name"] == objects["Role"]["metadata"]["name"]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]


def test_worker_polls_the_pool_with_the_stack_prefect_version() -> None:
    container = worker_container()
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert args[args.index("--pool") + 1] == deploy.KUBERNETES_POOL
    assert args[args.index("--type") + 1] == deploy.KUBERNETES
    version = re.search(r"ARG PREFECT_VERSION=(\S+)", (ROOT / "infra" / "Dockerfile").read_text())
    assert version and container["image"].startswith(f"prefecthq/prefect:{version.group(1)}-")
    assert container["image"].endswith("-kubernetes"), "the worker needs prefect-kubernetes"
    env = {e["name"]: e for e in container["env"]}
    secret = env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": defaults()["credentials_secret"], "key": "PREFECT_API_AUTH_STRING"}
    prefix = "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_"
    assert (env[prefix + "NAME"]["value"], env[prefix + "KEY"]["value"]) == (
        secret["name"],
        secret["key"],
    )


# --- flows.deploy for the Kubernetes pool -------------------------------------------------


def test_job_variables_leave_unset_options_to_the_pool() -> None:
    assert deploy.kubernetes_job_variables(None, None, None) == {}
    assert deploy.kubernetes_job_variables("reg.example/arcflow:1", 0, "ws") == {
        "image": "reg.example/arcflow:1",
        "gpus": 0,
        "workspace_pvc": "ws",
    }


def test_kubernetes_deployments_import_the_flows_and_run_in_the_workspace(
    render: Render,
) -> None:
    settings = load_params(ROOT / "params.yaml", ("flows",)).flows
    job_variables = deploy.kubernetes_job_variables("reg.example/arcflow:2", 4, "team-ws")
    deployments = deploy.kubernetes_deployments(settings, job_variables)
    by_name = {d.name: d for d in deployments}
    assert set(by_name) == {deploy.RETRAIN, deploy.ON_DEMAND}
    assert by_name[deploy.RETRAIN].schedules, "the retraining schedule is lost"
    for d in deployments:
        assert d._entrypoint_type is EntrypointType.MODULE_PATH
        assert d.storage is None
        assert d.parameters == {"repo": "/workspace"}
        assert d.job_variables == job_variables
        assert d.concurrency_limit == 1
        assert load_flow_from_entrypoint(d.entrypoint).name == d.flow_name
    manifest = render(job_variables)
    pod = validate_job(manifest).spec.template.spec
    assert pod.containers[0].image == "reg.example/arcflow:2"
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == 4
    claims = [v.persistent_volume_claim for v in pod.volumes if v.persistent_volume_claim]
    assert [c.claim_name for c in claims] == ["team-ws"]


def test_load_template_reads_the_repository_template_and_refuses_others(tmp_path: Path) -> None:
    assert deploy.TEMPLATE == K8S / "base-job-template.json"
    assert deploy.load_template(deploy.TEMPLATE) == template()
    broken = tmp_path / "t.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        deploy.load_template(broken)
    broken.write_text('{"variables": {}}')
    with pytest.raises(ConfigError, match="job_configuration"):
        deploy.load_template(broken)
