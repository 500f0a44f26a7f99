"""One MLflow run per pipeline execution, against a real tracking server and the local store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from arcflow.config import TrackingParams
from arcflow.errors import TrackingError
from arcflow.tracking.datasets import EVALUATION, TRAINING, log_dvc_input
from arcflow.tracking.provenance import GitState, git_state
from arcflow.tracking.run import (
    local_artifacts,
    read_run_id,
    resume_run,
    start_run,
    store_root,
    tracking_uri,
)
from arcflow.tracking.stage_params import current_params, log_stage_params
from tests.git_repo import git

pytestmark = pytest.mark.integration


def test_env_uri_wins_and_relative_sqlite_resolves(monkeypatch, tmp_path: Path) -> None:
    params = TrackingParams()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri(params, tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking_uri(params, tmp_path) == "http://127.0.0.1:1"


def test_stages_share_one_run_on_a_server(monkeypatch, tmp_path: Path, mlflow_server: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    params = TrackingParams(experiment="stages-share-a-run")
    run_file = tmp_path / "models" / "mlflow_run.json"
    with start_run(params, tmp_path, run_file, run_name="pipeline", tags={"t": "1"}):
        mlflow.log_metric("train.loss", 1.5, step=3)
    assert not mlflow.active_run()
    run_id = read_run_id(run_file)
    with resume_run(params, tmp_path, run_file) as run:
        assert run.info.run_id == run_id
        mlflow.log_metric("eval.accuracy", 0.9)
        (tmp_path / "note.txt").write_text("x")
        mlflow.log_artifact(str(tmp_path / "note.txt"), artifact_path="plots")

    client = mlflow.MlflowClient(mlflow_server)
    stored = client.get_run(run_id)
    assert stored.data.metrics == {"train.loss": 1.5, "eval.accuracy": 0.9}
    assert stored.data.tags["t"] == "1"
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/note.txt"]
    experiment = client.get_experiment_by_name("stages-share-a-run")
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_failed_training_records_no_run_id(monkeypatch, tmp_path: Path, mlflow_server: str):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run_file = tmp_path / "mlflow_run.json"
    with (
        pytest.raises(RuntimeError),
        start_run(TrackingParams(experiment="failed"), tmp_path, run_file, run_name="p", tags={}),
    ):
        raise RuntimeError("training diverged")
    assert not run_file.exists()


def test_unreachable_server_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    from infra.local.processes import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with (
        pytest.raises(TrackingError, match=r"tracking store http://127\.0\.0\.1:\d+ is not usable"),
        start_run(TrackingParams(), tmp_path, tmp_path / "run.json", run_name="p", tags={}),
    ):
        pass


def test_unknown_run_is_a_clear_error(monkeypatch, tmp_path: Path, mlflow_server: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run_file = tmp_path / "mlflow_run.json"
    run_file.write_text(json.dumps({"run_id": "0" * 32}))
    with (
        pytest.raises(TrackingError, match="is not in the tracking store"),
        resume_run(TrackingParams(), tmp_path, run_file),
    ):
        pass
    run_file.unlink()
    with pytest.raises(TrackingError, match="no MLflow run recorded"):
        read_run_id(run_file)


# --- the local store, experiments, params of reruns, dataset inputs, git state (SQLite) ---


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server and no DVC stage around: the local default store applies."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)


def test_the_local_store_lives_in_the_original_repository(
    local: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A queued experiment runs in <repo>/.dvc/tmp/exps/<tmp>: its store is still <repo>'s."""
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    assert store_root(repo) == repo.resolve()
    assert store_root(copy) == repo.resolve()  # by path, when DVC_ROOT is not set
    assert tracking_uri(TrackingParams(), copy) == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
    elsewhere = tmp_path / "original"
    elsewhere.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(elsewhere))  # what DVC sets for a queued experiment
    assert tracking_uri(TrackingParams(), copy) == f"sqlite:///{elsewhere.resolve() / 'mlflow.db'}"
    assert tracking_uri(TrackingParams(default_uri="sqlite:////abs/m.db"), copy) == (
        "sqlite:////abs/m.db"
    )
    assert local_artifacts("sqlite:////abs/m.db?timeout=5") == Path("/abs/mlartifacts")
    assert local_artifacts("http://127.0.0.1:5000") is None


def test_an_experiment_made_in_a_copy_keeps_artifacts_in_the_original(
    local: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    params = TrackingParams(experiment="from-a-copy")
    with start_run(params, copy, copy / "run.json", run_name="p", tags={}):
        mlflow.log_text("hello", "notes/hello.txt")
    run_id = read_run_id(copy / "run.json")
    assert (repo / "mlflow.db").is_file() and not (copy / "mlflow.db").exists()
    found = list((repo / "mlartifacts").rglob("hello.txt"))
    assert [p.parent.parent.parent.name for p in found] == [run_id]
    assert not (copy / "mlruns").exists() and not (copy / "mlartifacts").exists()


def test_a_renamed_experiment_still_resumes_the_pipeline_run(local: None, tmp_path: Path) -> None:
    """``tracking`` is no DVC param: after a rename, evaluate reopens train's run where it is."""
    run_file = tmp_path / "mlflow_run.json"
    with start_run(TrackingParams(experiment="before"), tmp_path, run_file, run_name="p", tags={}):
        pass
    renamed = TrackingParams(experiment="after")
    with resume_run(renamed, tmp_path, run_file) as run:
        mlflow.log_metric("eval.accuracy", 0.5)
    store = MlflowClient(tracking_uri(renamed, tmp_path))
    assert store.get_experiment(run.info.experiment_id).name == "before"
    assert store.get_run(read_run_id(run_file)).data.metrics == {"eval.accuracy": 0.5}
    assert store.get_experiment_by_name("after") is None  # reopening creates nothing


def test_a_rerun_with_changed_params_shows_the_new_values(local: None, tmp_path: Path) -> None:
    run_file = tmp_path / "mlflow_run.json"
    params = TrackingParams(experiment="reruns")
    with start_run(params, tmp_path, run_file, run_name="p", tags={}):
        assert log_stage_params("evaluate", {"evaluate": {"flip": True, "n_folds": 10}}) == []
    for flip, changed in ((False, ["evaluate.flip"]), (True, [])):
        with resume_run(params, tmp_path, run_file) as run:
            sections = {"evaluate": {"flip": flip, "n_folds": 10, "chunk": 64}}
            assert log_stage_params("evaluate", sections) == changed
        stored = MlflowClient(tracking_uri(params, tmp_path)).get_run(run.info.run_id)
        assert stored.data.params == {
            "evaluate.flip": "True",  # write-once: the first execution's
            "evaluate.n_folds": "10",
            "evaluate.chunk": "64",
        }
        assert current_params(stored)["evaluate.flip"] == str(flip)
        assert ("params.evaluate.flip" in stored.data.tags) == (not flip)
        artifact = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/params/evaluate.yaml")
        assert yaml.safe_load(artifact) == sections


def test_dvc_outputs_become_dataset_inputs_carrying_their_md5(
    local: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK)
    (tmp_path / "data" / "aligned" / "train").mkdir(parents=True)
    params = TrackingParams(experiment="lineage")
    with start_run(params, tmp_path, tmp_path / "run.json", run_name="p", tags={}) as run:
        assert log_dvc_input(Path("data/aligned/train"), TRAINING) is not None
        assert log_dvc_input(tmp_path / "data" / "aligned" / "eval", EVALUATION) is not None
        assert log_dvc_input(Path("data/raw/elsewhere"), TRAINING) is None  # not a DVC output
    stored = MlflowClient(tracking_uri(params, tmp_path)).get_run(run.info.run_id)
    inputs = {
        d.dataset.name: (d.dataset.digest, {t.key: t.value for t in d.tags})
        for d in stored.inputs.dataset_inputs
    }
    assert inputs == {
        "data/aligned/train": (
            TRAIN_MD5,
            {
                "mlflow.data.context": "training",
                "dvc.path": "data/aligned/train",
                "dvc.stage": "align",
                "dvc.md5": TRAIN_MD5,
            },
        ),
        "data/aligned/eval": (
            EVAL_MD5,
            {
                "mlflow.data.context": "evaluation",
                "dvc.path": "data/aligned/eval",
                "dvc.stage": "align",
                "dvc.md5": EVAL_MD5,
            },
        ),
    }
    source = json.loads(stored.inputs.dataset_inputs[0].dataset.source)
    assert source["uri"].startswith(str(tmp_path.resolve()))


def test_a_dirty_tree_is_marked_but_not_what_the_pipeline_writes(tmp_path: Path) -> None:
    assert git_state(tmp_path) == GitState("unknown", None)
    assert git_state(tmp_path).tags()["git.dirty"] == "unknown"
    git(tmp_path, "init", "-q")
    (tmp_path / "metrics").mkdir()
    for name in ("params.yaml", "dvc.lock", "metrics/eval.json", "a.py", "b.py"):
        (tmp_path / name).write_text("0\n")
    (tmp_path / "dvc.lock").write_text("stages:\n  evaluate:\n    outs:\n    - path: metrics\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "x")
    commit = git_state(tmp_path).commit
    (tmp_path / "metrics" / "eval.json").write_text("1\n")  # stages write these
    (tmp_path / "dvc.lock").write_text("stages:\n  evaluate:\n    outs:\n    - path: metrics\n#\n")
    (tmp_path / "untracked.txt").write_text("not part of the code")
    clean = git_state(tmp_path)
    assert clean == GitState(commit, False)
    assert clean.tags() == {"arcflow.git_sha": commit, "git.dirty": "false"}
    (tmp_path / "params.yaml").write_text("1\n")
    git(tmp_path, "mv", "a.py", "c.py")
    (tmp_path / "b.py").unlink()
    dirty = git_state(tmp_path)
    assert dirty == GitState(commit, True, ("b.py", "c.py", "params.yaml"))
    assert dirty.tags() == {
        "arcflow.git_sha": commit,
        "git.dirty": "true",
        "git.modified_count": "3",
        "git.modified": "b.py, c.py, params.yaml",
    }


TRAIN_MD5 = "0123456789abcdef0123456789abcdef.dir"
EVAL_MD5 = "fedcba9876543210fedcba9876543210.dir"
LOCK = f"""schema: '2.0'
stages:
  align:
    cmd: python -m stages.align
    outs:
    - path: data/aligned/eval
      hash: md5
      md5: {EVAL_MD5}
    - path: data/aligned/train
      hash: md5
      md5: {TRAIN_MD5}
  train:
    deps:
    - path: data/aligned/train
      md5: 00000000000000000000000000000000.dir
"""
