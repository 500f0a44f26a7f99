"""MLflow tracking under real DVC: queued experiments keep their runs, and the ``tracking``
section (where results go) is no parameter of any stage (what results are)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEP = """\
from pathlib import Path

import mlflow
import yaml

from arcflow.config import TrackingParams
from arcflow.tracking.provenance import dvc_experiment_tags
from arcflow.tracking.run import start_run
from arcflow.tracking.stage_params import log_stage_params

raw = yaml.safe_load(Path("params.yaml").read_text())
tracking = TrackingParams(**raw["tracking"])
tags = {"cwd": str(Path.cwd()), **dvc_experiment_tags()}
with start_run(tracking, Path.cwd(), Path("run.json"), run_name="step", tags=tags):
    log_stage_params("step", {"step": raw["step"]})
    mlflow.log_text(f"x={raw['step']['x']}", "notes/x.txt")
"""


def _env() -> dict[str, str]:
    """A stage's environment outside any DVC run or tracking server; ``dvc`` (which the queue's
    workers start) and ``python`` from this interpreter's environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")
    }
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | {"PATH": path, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}


def _run(repo: Path, *cmd: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        cmd, cwd=repo, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _project(repo: Path) -> None:
    """git + DVC repository with one stage that opens an MLflow run like train does."""
    repo.mkdir()
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "config", "user.name", "ArcFlow tests")
    _run(repo, "git", "config", "user.email", "tests@arcflow.invalid")
    _run(repo, "dvc", "init", "-q")
    params = {
        "step": {"x": 0},
        "tracking": {"experiment": "queued", "default_uri": "sqlite:///mlflow.db"},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "step.py").write_text(STEP)
    stage = {"cmd": "python step.py", "deps": ["step.py"], "params": ["step"], "outs": ["run.json"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"step": stage}}))
    (repo / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "a one-stage pipeline")


def test_queued_experiments_keep_their_runs_in_the_original_store(tmp_path: Path) -> None:
    """`dvc exp run --queue` runs each experiment in a copy under .dvc/tmp/exps that is deleted
    afterwards: the runs, their params and artifacts must land in the repository's store."""
    repo = tmp_path / "repo"
    _project(repo)
    _run(repo, "dvc", "exp", "run", "--queue", "-n", "first", "-S", "step.x=1")
    _run(repo, "dvc", "exp", "run", "--queue", "-n", "second", "-S", "step.x=2")
    _run(repo, "dvc", "exp", "run", "--run-all", "-j", "1", timeout=300)

    assert (repo / "mlflow.db").is_file(), "the queued runs went into the deleted copies"
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("queued")
    assert experiment.artifact_location == (repo / "mlartifacts").resolve().as_uri()
    runs = client.search_runs([experiment.experiment_id])
    by_x = {run.data.params["step.x"]: run for run in runs}
    assert sorted(by_x) == ["1", "2"]
    for x, name in (("1", "first"), ("2", "second")):
        tags = by_x[x].data.tags
        assert tags["dvc.exp_name"] == name
        assert ".dvc/tmp/exps/" in tags["cwd"] and not Path(tags["cwd"]).exists()  # deleted
        (note,) = (repo / "mlartifacts").rglob(f"{by_x[x].info.run_id}/artifacts/notes/x.txt")
        assert note.read_text() == f"x={x}"
    show = json.loads(_run(repo, "dvc", "exp", "show", "--json"))
    names = {exp["name"] for rev in show for exp in rev.get("experiments") or []}
    assert {"first", "second"} <= names


def test_renaming_the_experiment_or_store_reruns_no_stage(tmp_path: Path) -> None:
    """DVC's own params status on the real dvc.yaml (imports expanded too): a new
    ``tracking.experiment`` or ``default_uri`` leaves every stage up to date."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["imports"] = {"other": {"uri": "https://example.invalid/model.onnx"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _run(tmp_path, "dvc", "init", "--no-scm", "-q")
    stages = Repo(str(tmp_path)).index.stages
    deps = {
        stage.name: [d for d in stage.deps if isinstance(d, ParamsDependency)] for stage in stages
    }
    assert {"train", "evaluate", "export", "import@other", "leaderboard"} <= set(deps)
    assert {"export_imported@other", "evaluate_imported@other"} <= set(deps)
    for stage_deps in deps.values():
        assert not [p for d in stage_deps for p in d.params if p.split(".")[0] == "tracking"]
        for dep in stage_deps:
            dep.save()  # what dvc.lock records after a run

    params["tracking"] = {"experiment": "renamed", "default_uri": "sqlite:///elsewhere.db"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    changed = {name: [d.status() for d in ds] for name, ds in deps.items()}
    assert {name for name, status in changed.items() if any(status)} == set()

    params["train"]["lr"] = params["train"]["lr"] / 2  # the check can fail: this one reruns
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    changed = {name: [d.status() for d in ds] for name, ds in deps.items()}
    assert {name for name, status in changed.items() if any(status)} == {"train", "export"}
