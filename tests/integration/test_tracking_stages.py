"""What the stages log into the pipeline's run (the local SQLite store): the params each used,
also when only evaluate reruns with another value; the data as DVC-versioned dataset inputs;
the git state, dirty tree included."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient

from arcflow.config import TrainParams
from arcflow.tracking.stage_params import current_params
from arcflow.train.loop import precision_name
from tests.conftest import ROOT, run_stage
from tests.git_repo import git

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_MD5 = "0123456789abcdef0123456789abcdef.dir"
EVAL_MD5 = "fedcba9876543210fedcba9876543210.dir"
TINY = {
    "width": 0.125,
    "embedding_size": 32,
    "epochs": 1,
    "batch_size": 8,
    "device": "cpu",
    "num_workers": 0,
    "val_every": 0,
    "checkpoint_every": 0,
}


def _write_params(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def work(tmp_path: Path, tiny_aligned: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed checkout: params, dvc.lock (align's outputs), the aligned data in place."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(TINY)
    params["evaluate"].update(benchmarks=["lfw"], device="cpu", cache_dir=None, flip=True)
    params["export"].update(parity_real=4, latency_runs=2, throughput_batch=2)
    params["serve"]["detector"] = "mtcnn"  # no weights file to fetch
    params["tracking"] = {"experiment": "stages", "default_uri": "sqlite:///mlflow.db"}
    _write_params(tmp_path, params)
    outs = [
        {"path": "data/aligned/eval", "hash": "md5", "md5": EVAL_MD5},
        {"path": "data/aligned/train", "hash": "md5", "md5": TRAIN_MD5},
    ]
    lock = {"schema": "2.0", "stages": {"align": {"cmd": "python -m stages.align", "outs": outs}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    (tmp_path / ".gitignore").write_text("/data\n/models\n/metrics\n/plots\n/reports\n/mlflow*\n")
    aligned = tmp_path / "data" / "aligned"
    aligned.mkdir(parents=True)
    (aligned / "train").symlink_to(tiny_aligned, target_is_directory=True)
    (aligned / "eval").symlink_to(tiny_aligned.parent / "eval", target_is_directory=True)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "pipeline")
    return tmp_path


def _evaluate(work: Path) -> None:
    proc = run_stage(
        "evaluate", "--data", "data/aligned/eval", "--model", "models/backbone.pt",
        "--run", "models/mlflow_run.json", "--metrics", "metrics/eval.json", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_each_stage_logs_its_params_data_and_git_state_into_the_run(work: Path) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["lr"] = 0.02  # an uncommitted change: the run is marked dirty
    _write_params(work, params)
    proc = run_stage("train", "--data", "data/aligned/train", "--out", "models", cwd=work)
    assert proc.returncode == 0, proc.stderr
    _evaluate(work)
    params["evaluate"]["flip"] = False  # only evaluate reruns (dvc repro evaluate)
    _write_params(work, params)
    _evaluate(work)
    proc = run_stage(
        "export", "--model", "models/backbone.pt", "--run", "models/mlflow_run.json",
        "--out", "models/arcface.onnx", "--data", "data/aligned/eval", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    run_id = json.loads((work / "models" / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    run = client.get_run(run_id)
    logged = run.data.params
    assert logged["train.lr"] == "0.02" and logged["train.width"] == "0.125"
    assert logged["align.detector"] == params["align"]["detector"]
    assert logged["data.sources.synthface.uri"] == "synthetic://synthface"
    assert logged["dataset.images"] == "24" and logged["dataset.classes"] == "6"
    assert "tracking.experiment" not in logged and "flows.retrain_cron" not in logged
    assert logged["export.opset"] == "18" and logged["serve.detector"] == "mtcnn"
    assert logged["registry.model_name"] == params["registry"]["model_name"]
    # what precision: auto resolved to on this machine
    assert run.data.tags["arcflow.precision"] == precision_name(TrainParams(), torch.device("cpu"))
    # write-once param of the first evaluation; the rerun's value as a tag and in the artifact
    assert logged["evaluate.flip"] == "True"
    assert run.data.tags["params.evaluate.flip"] == "False"
    assert current_params(run)["evaluate.flip"] == "False"
    assert current_params(run)["evaluate.benchmarks"] == "['lfw']"
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    used = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/params/evaluate.yaml"))
    assert used["evaluate"]["flip"] is False
    trained = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/params/train.yaml"))
    assert set(trained) == {"data", "align", "train", "dataset"}

    inputs = {
        d.dataset.name: (d.dataset.digest, {t.key: t.value for t in d.tags})
        for d in run.inputs.dataset_inputs
    }
    assert inputs["data/aligned/train"][0] == TRAIN_MD5
    assert inputs["data/aligned/train"][1]["mlflow.data.context"] == "training"
    assert inputs["data/aligned/eval"][0] == EVAL_MD5
    assert inputs["data/aligned/eval"][1]["mlflow.data.context"] == "evaluation"
    assert len(run.inputs.dataset_inputs) == 2  # the rerun logged the same version again

    tags = run.data.tags
    assert tags["git.dirty"] == "true" and tags["git.modified"] == "params.yaml"
    assert tags["git.modified_count"] == "1" and len(tags["arcflow.git_sha"]) == 40
    assert "eval.lfw.accuracy" in run.data.metrics

    model_id = json.loads((work / "models" / "onnx_model.json").read_text())["model_id"]
    model = client.get_logged_model(model_id)
    assert model.params["git_dirty"] == "true"
    assert model.params["git_commit"] == tags["arcflow.git_sha"]
    accuracy = {m.key: m for m in model.metrics}["eval.lfw.accuracy"]
    assert (accuracy.dataset_name, accuracy.dataset_digest) == ("data/aligned/eval", EVAL_MD5)


def test_import_and_leaderboard_log_the_params_they_used(work: Path) -> None:
    import torch

    from arcflow.models import get_backbone

    torch.save({"state_dict": get_backbone("r18", width=0.125).state_dict()}, work / "r18.pth")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["imports"] = {"ext": {"uri": str(work / "r18.pth"), "license": "CC0"}}
    _write_params(work, params)
    proc = run_stage("import_model", "--name", "ext", "--out", "models/imported/ext", cwd=work)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    run_file = work / "models" / "imported" / "ext" / "mlflow_run.json"
    imported = client.get_run(json.loads(run_file.read_text())["run_id"])
    assert imported.data.params["import.source"] == str(work / "r18.pth")
    assert imported.data.params["import.name"] == "ext"
    assert imported.data.tags["git.dirty"] == "true"  # params.yaml has the new import
    assert imported.data.tags["git.modified"] == "params.yaml"

    (work / "metrics" / "imported" / "ext").mkdir(parents=True)
    for path in ("metrics/eval.json", "metrics/imported/ext/eval.json"):
        (work / path).write_text(json.dumps({"lfw": {"accuracy": 0.5}}))
    (work / "metrics" / "eval_details.json").write_text("{}")
    proc = run_stage("leaderboard", "--run", run_file, cwd=work)
    assert proc.returncode == 0, proc.stderr
    logged = client.get_run(imported.info.run_id).data.params
    assert logged["imports.ext.uri"] == str(work / "r18.pth")
    assert logged["imports.ext.license"] == "CC0"
    assert logged["registry.model_name"] == params["registry"]["model_name"]
