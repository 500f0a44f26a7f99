"""One MLflow run per pipeline execution, against a real tracking server."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from arcflow.config import TrackingParams
from arcflow.errors import TrackingError
from arcflow.tracking.run import read_run_id, resume_run, start_run, tracking_uri

pytestmark = pytest.mark.integration


def test_env_uri_wins_and_relative_sqlite_resolves(monkeypatch, tmp_path: Path) -> None:
    params = TrackingParams()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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
