"""`dvc repro` of the whole default pipeline in a temporary copy of the repository, against
the local service stack: MLflow server with artifacts in S3, the DVC remote on S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from arcflow.config import BENCHMARK_NAMES
from infra.local.stack import BUCKETS, CREDENTIALS, Stack
from tests.external_models import (
    save_checkpoint,
    save_pack_onnx,
    trained_looking,
)
from tests.photos import insightface_photos
from tests.serving import images_body, post, scoring_server

# the first test's time includes the module's `dvc repro` of the whole pipeline
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2400)]

# every evaluation set, each smaller than the default's (evaluate embeds each distinct image
# once: its cost follows identities x images); IJB-C keeps 40 subjects: 28,080 impostor pairs
# resolve FAR 1e-4, the face service's default threshold
E2E_SYNTHFACE = {
    "train_identities": 200,
    "train_images_per_identity": 8,
    "val_identities": 40,
    "val_images_per_identity": 4,
    "val_pairs_per_fold": 15,
    "megaface_distractors": 200,
}
E2E_EPOCHS = 3
LFW_PAIRS = E2E_SYNTHFACE["val_pairs_per_fold"] * 2 * 10  # same + different, 10 folds
IMPORTS = ("ext_r18", "ext_mbf")  # models "trained elsewhere", scored beside the pipeline's
STAGES = [
    "download@synthface",
    "align",
    "train",
    "evaluate",
    "export",
    *(f"{stage}@{name}" for name in IMPORTS for stage in ("import", "evaluate_imported")),
    *(f"export_imported@{name}" for name in IMPORTS),
    "leaderboard",
]


def _copy_checkout(src: Path, dst: Path) -> None:
    """Copy tracked and untracked-but-not-ignored files, as a fresh clone would hold them."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=src,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)


SERVICES: dict[str, str] = {}  # the local stack's environment, set by the pipeline fixture


def _run(cmd: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "CI": "true"}
    env.update(SERVICES)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == expect, (
        f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def _external_models(folder: Path, stack: Stack) -> dict[str, dict[str, str]]:
    """Two published-style models, as params ``imports``: an fp16 arcface_torch checkpoint on
    the stack's S3 (with its sha256) and an insightface-pack ONNX (normalisation inside the
    graph, fixed batch 1) on disk."""
    import hashlib

    import boto3

    checkpoint = save_checkpoint(
        trained_looking("iresnet18", 1, width=0.125, embedding_size=32), folder / "backbone.pth"
    )
    pack = save_pack_onnx(
        trained_looking("mobilefacenet", 2, width=0.25, embedding_size=64), folder / "w600k.onnx"
    )
    key = f"e2e-{uuid.uuid4().hex[:8]}/backbone.pth"
    s3 = boto3.client("s3", endpoint_url=stack.s3_url, **{
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    })  # fmt: skip
    s3.upload_file(str(checkpoint), BUCKETS["data"], key)
    return {
        "ext_r18": {
            "uri": f"s3://{BUCKETS['data']}/{key}",
            "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            "license": "CC0-1.0 (e2e)",
        },
        "ext_mbf": {"uri": str(pack), "license": "MIT (e2e)"},
    }


@pytest.fixture(scope="module")
def pipeline(
    repo_root: Path, tmp_path_factory: pytest.TempPathFactory, local_stack: Stack
) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("pipeline")
    _copy_checkout(repo_root, work)
    # start from nothing: no lock, no committed metrics or plots to mistake for fresh ones
    (work / "dvc.lock").unlink(missing_ok=True)
    for stale in ("metrics", "plots", "reports"):
        shutil.rmtree(work / stale, ignore_errors=True)
    # the stack is shared with other tests: an experiment and a registered model of our own
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tracking"]["experiment"] = f"e2e-{uuid.uuid4().hex[:8]}"
    params["registry"]["model_name"] = f"arcface-e2e-{uuid.uuid4().hex[:8]}"
    params["imports"] = _external_models(tmp_path_factory.mktemp("external"), local_stack)
    # a smaller SynthFace than the default's and a shorter run: this module tests the pipeline
    # end to end (and must fit the suite's time); what the full default learns is measured by
    # bench/pipeline_walltime.sh
    params["data"]["sources"]["synthface"]["options"].update(E2E_SYNTHFACE)
    params["train"]["epochs"] = E2E_EPOCHS
    params["export"].update(latency_runs=3, throughput_batch=8)  # speed is not tested here
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    SERVICES.update(local_stack.env())
    _run(["git", "init", "-q"], work)
    _run(["dvc", "repro"], work)
    yield work
    SERVICES.clear()


def _params(pipeline: Path) -> dict:
    return yaml.safe_load((pipeline / "params.yaml").read_text())


def _client():
    import mlflow

    return mlflow.MlflowClient(SERVICES["MLFLOW_TRACKING_URI"])


def test_repro_produces_metrics_model_and_onnx(pipeline: Path) -> None:
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], pipeline).stdout)
    metrics = next(iter(shown.values()))["data"]
    evaluation = metrics["metrics/eval.json"]["data"]
    assert set(evaluation) == set(BENCHMARK_NAMES)  # every benchmark, scored or listed
    scored = {name for name, values in evaluation.items() if values != "not available"}
    assert scored == {"lfw", "cfp_fp", "agedb_30", "ytf", "megaface", "ijbc"}
    # a working pipeline, far from chance (a broken one scores chance); how much the default
    # learns is measured by bench/pipeline_walltime.sh. Measured here: accuracies 0.77-0.94,
    # MegaFace rank-1 0.84, IJB-C TAR@1e-4 0.38 (300 pairs per set: chance +- 0.03)
    for name in ("lfw", "cfp_fp", "agedb_30", "ytf"):
        assert 0.65 < evaluation[name]["accuracy"] <= 1.0, name  # chance is 0.5
    assert 0.5 < evaluation["megaface"]["rank1"] <= 1.0  # chance is 1/201 (200 distractors)
    assert 0.1 < evaluation["ijbc"]["tar_far_1e-4"] <= 1.0  # chance is 1e-4
    # the sets discriminate: no headline is saturated
    headlines = {
        **{n: evaluation[n]["accuracy"] for n in ("lfw", "cfp_fp", "agedb_30", "ytf")},
        "megaface": evaluation["megaface"]["rank1"],
        "ijbc": evaluation["ijbc"]["tar_far_1e-4"],
    }
    assert all(value < 1.0 for value in headlines.values()), headlines
    report = (pipeline / "reports" / "evaluation.md").read_text()
    assert "| IJB-B | | tar_far_1e-4 | not available | | |" in report
    assert report.splitlines()[2].startswith("**Data: synthface**")
    impostors = json.loads((pipeline / "metrics" / "eval_details.json").read_text())["ijbc"][
        "n_impostor"
    ]
    for far in (1e-4, 1e-5, 1e-6):  # below what IJB-C's impostor pairs resolve: never a number
        value = evaluation["ijbc"][f"tar_far_{far:.0e}".replace("e-0", "e-")]
        assert (value == "below resolution") == (far * impostors < 1), (far, value)
    assert "99.83" not in report and "96.18" not in report  # no published numbers here
    for name in scored:
        assert (pipeline / "plots" / "roc" / f"{name}.png").is_file(), name
    assert metrics["metrics/export.json"]["data"]["max_abs_diff"] < 1e-4
    assert (pipeline / "models" / "arcface.onnx").stat().st_size > 100_000
    assert (pipeline / "plots" / "roc" / "lfw.csv").read_text().startswith("fpr,tpr")


def test_one_mlflow_run_holds_all_stages_with_artifacts_in_s3(
    pipeline: Path, local_stack: Stack
) -> None:
    run_id = json.loads((pipeline / "models" / "mlflow_run.json").read_text())["run_id"]
    client = _client()
    run = client.get_run(run_id)
    keys = set(run.data.metrics)
    assert {
        "train.loss",
        "eval.lfw.accuracy",
        "eval.ijbc.tar_far_1e-4",
        "export.max_abs_diff",
    } <= keys
    assert run.data.params["train.head"] == "arcface"
    experiment = client.get_experiment_by_name(_params(pipeline)["tracking"]["experiment"])
    assert run.info.experiment_id == experiment.experiment_id
    runs = client.search_runs([run.info.experiment_id])  # the pipeline's, one per import
    assert sorted(r.info.run_name for r in runs) == sorted(
        ["pipeline", *(f"import:{name}" for name in IMPORTS)]
    )
    artifacts = {a.path for d in ("plots", "reports") for a in client.list_artifacts(run_id, d)}
    assert {"plots/roc.png", "reports/evaluation.md"} <= artifacts
    # proxied artifacts: the server wrote them into the stack's bucket
    model_id = json.loads((pipeline / "models" / "onnx_model.json").read_text())["model_id"]
    s3 = local_stack.s3_client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKETS["mlflow"])
    stored = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    assert any(run_id in k and k.endswith("plots/roc.png") for k in stored)
    assert any(model_id in k and k.endswith("bundle/backbone.onnx") for k in stored)


def test_the_exported_model_becomes_the_first_champion(pipeline: Path) -> None:
    """`arcflow promote` on the pipeline's own output, against the MLflow server: the first
    model passes the absolute gates of params.yaml; promoting it again changes nothing."""
    model_id = json.loads((pipeline / "models" / "onnx_model.json").read_text())["model_id"]
    client = _client()
    logged = client.get_logged_model(model_id)
    assert {"git_commit", "params_hash", "data_version"} <= set(logged.params)
    assert logged.params["data_version"] != "unknown"  # dvc.lock had train's entry
    assert {"eval.lfw.accuracy", "export.min_cosine"} <= {m.key for m in logged.metrics}

    promoted = _run([sys.executable, "-m", "arcflow.cli", "promote"], pipeline)
    assert "**Decision: promoted.**" in promoted.stdout
    name = _params(pipeline)["registry"]["model_name"]
    version = client.get_model_version_by_alias(name, "champion")
    assert str(version.version) == "1"
    # the model card is the version's description; its numbers are the run's metrics
    assert version.description.startswith("# Model card")
    lfw = client.get_run(logged.source_run_id).data.metrics["eval.lfw.accuracy"]
    assert f"| LFW | accuracy | {lfw:.6g} |" in version.description
    assert version.tags["thresholds.set"] == "ijbc"
    assert int(version.tags["thresholds.n_impostor"]) >= 10_000  # resolves the default 1e-4
    assert -1.0 <= float(version.tags["thresholds.far_1e-4"]) <= 1.0
    again = _run([sys.executable, "-m", "arcflow.cli", "promote"], pipeline, expect=3)
    assert "champion already" in again.stdout


def test_the_champion_serves_photos_over_rest(pipeline: Path, tmp_path: Path) -> None:
    """`mlflow models serve -m models:/<name>@champion` of the pipeline's own registered model
    (artifacts proxied from the stack's S3): insightface's group photo gives its 6 faces and
    the portrait 1, with the embeddings of the in-process pipeline."""
    import mlflow
    import numpy as np

    from arcflow.serve.loading import load_pipeline

    name = _params(pipeline)["registry"]["model_name"]
    uri = f"models:/{name}@champion"
    photos = insightface_photos()
    group, portrait = photos["t1.jpg"].read_bytes(), photos["Tom_Hanks_54745.png"].read_bytes()
    with scoring_server(uri, dict(SERVICES), tmp_path / "serve.log") as (url, _):
        status, body = post(url, images_body(group, portrait))
    assert status == 200, body
    rows = body["predictions"]
    assert [r["image"] for r in rows] == [0] * 6 + [1]
    mlflow.set_tracking_uri(SERVICES["MLFLOW_TRACKING_URI"])  # undone after the module
    local = load_pipeline(uri, cache=tmp_path / "model").analyze([group, portrait])
    np.testing.assert_allclose(
        np.array([r["embedding"] for r in rows]),
        np.stack([f.embedding for f in local.faces]),
        atol=1e-5,
    )


def _headlines(table: dict, row: int) -> dict[str, float | None]:
    return {key: values[row] for key, values in table.items() if "." in key}


def test_the_leaderboard_holds_each_models_evaluate_metrics(pipeline: Path) -> None:
    """`leaderboard`: one row per model (the pipeline's + both imports), its numbers those of
    the model's own eval.json; published reference rows; set sizes; logged to MLflow."""
    from arcflow.evaluate.published import PUBLISHED

    table = json.loads((pipeline / "reports" / "leaderboard.json").read_text())
    name = _params(pipeline)["registry"]["model_name"]
    assert table["model"][:3] == [f"{name} (this pipeline)", *IMPORTS]
    documents = [
        pipeline / "metrics" / "eval.json",
        *(pipeline / "metrics" / "imported" / n / "eval.json" for n in IMPORTS),
    ]
    for row, path in enumerate(documents):
        evaluation = json.loads(path.read_text())
        headlines = _headlines(table, row)
        assert {"lfw.accuracy", "ijbc.tar_far_1e-4", "megaface.rank1"} <= set(headlines)
        for key, value in headlines.items():
            benchmark, metric = key.split(".", 1)
            assert value == evaluation[benchmark][metric], (path, key)
    # SynthFace's LFW has 600 pairs, not the real 6,000: no published number beside it
    assert table["model"][3] == "ArcFace paper (R100, MS1MV2)"
    assert table["lfw.accuracy"][3] is None and PUBLISHED["lfw"]["accuracy"].paper is not None
    assert table["model"][-1] == "set size" and table["lfw.accuracy"][-1] == f"{LFW_PAIRS} pairs"
    assert table["license"][1:3] == ["CC0-1.0 (e2e)", "MIT (e2e)"]
    markdown = (pipeline / "reports" / "leaderboard.md").read_text()
    assert f"| ext_mbf | {_params(pipeline)['imports']['ext_mbf']['uri']} | MIT (e2e) |" in markdown
    run_id = json.loads((pipeline / "models" / "mlflow_run.json").read_text())["run_id"]
    logged = {a.path for a in _client().list_artifacts(run_id)}
    assert "leaderboard.json" in logged


def test_imported_models_carry_their_provenance_into_mlflow(pipeline: Path) -> None:
    """Each import has its own run: provenance as params and tags, its evaluate metrics,
    and its logged face model (whose card states the licence)."""
    from arcflow.imports.model_import import read_record

    client, imports = _client(), _params(pipeline)["imports"]
    for name in IMPORTS:
        record = read_record(pipeline / "models" / "imported" / name)
        run_file = pipeline / "models" / "imported" / name / "mlflow_run.json"
        run = client.get_run(json.loads(run_file.read_text())["run_id"])
        assert run.data.params["import.source"] == imports[name]["uri"] == record.source
        assert run.data.params["import.sha256"] == record.sha256
        assert run.data.tags["arcflow.import.license"] == imports[name]["license"]
        lfw = json.loads((pipeline / "metrics" / "imported" / name / "eval.json").read_text())
        assert run.data.metrics["eval.lfw.accuracy"] == lfw["lfw"]["accuracy"]
        card = pipeline / "models" / "exported" / name / "face_model" / "model_card.md"
        assert f"- Licence: {imports[name]['license']}" in card.read_text()
    assert imports["ext_r18"]["sha256"] == read_record(pipeline / "models/imported/ext_r18").sha256
    conventions = read_record(pipeline / "models" / "imported" / "ext_mbf").conventions
    assert conventions is not None and conventions["normalisation"] == "inside"
    assert conventions["batch"] == "1" and conventions["batch_handling"] == "scan"


def test_an_imported_model_becomes_champion_only_through_the_gates_and_serves(
    pipeline: Path, tmp_path: Path
) -> None:
    """`arcflow promote` of an imported model (its own registered name here): refused by an
    absolute gate it misses, promoted once it passes them, then served like ours."""
    import mlflow
    import numpy as np
    import pandas as pd

    from arcflow.registry.store import aliases
    from arcflow.serve.loading import load_pipeline

    params = _params(pipeline)
    name = params["registry"]["model_name"] = f"imported-e2e-{uuid.uuid4().hex[:8]}"
    params["registry"]["min_metrics"] = {"eval.lfw.accuracy": 0.999}  # random weights miss it
    gated = tmp_path / "gated.yaml"
    gated.write_text(yaml.safe_dump(params, sort_keys=False))
    info = "models/exported/ext_mbf/onnx_model.json"
    promote = [sys.executable, "-m", "arcflow.cli", "promote", "--params", str(gated),
               "--model-info", info, "--report", str(tmp_path / "promotion.md")]  # fmt: skip
    refused = _run(promote, pipeline, expect=3)
    assert "eval.lfw.accuracy" in refused.stdout and "champion" not in aliases(_client(), name)
    params["registry"]["min_metrics"] = {}
    gated.write_text(yaml.safe_dump(params, sort_keys=False))
    assert "**Decision: promoted.**" in _run(promote, pipeline).stdout
    version = _client().get_model_version_by_alias(name, "champion")
    assert "- Licence: MIT (e2e)" in version.description

    mlflow.set_tracking_uri(SERVICES["MLFLOW_TRACKING_URI"])  # undone after the module
    portrait = insightface_photos()["Tom_Hanks_54745.png"].read_bytes()
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    rows = served.predict(pd.DataFrame({"image": [portrait]}))
    assert len(rows) == 1 and len(rows["embedding"][0]) == 64  # the ONNX pack's 64-d
    local = load_pipeline(str(pipeline / "models" / "exported" / "ext_mbf" / "face_model"))
    expected = local.analyze([portrait]).faces[0].embedding
    np.testing.assert_allclose(np.asarray(rows["embedding"][0]), expected, atol=1e-5)


def test_second_repro_reruns_nothing(pipeline: Path) -> None:
    out = _run(["dvc", "repro"], pipeline).stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    assert "Running stage" not in out


def test_dvc_push_then_pull_into_a_fresh_clone_restores_everything(
    pipeline: Path, tmp_path: Path
) -> None:
    """The DVC remote on the stack's S3 (endpoint and credentials from the environment):
    push from this checkout, pull into a fresh one, and `dvc repro` there runs nothing."""
    remote = f"s3://{BUCKETS['dvc']}/{uuid.uuid4().hex[:8]}"
    _run(["dvc", "remote", "add", "-d", "storage", remote], pipeline)
    pushed = _run(["dvc", "push"], pipeline).stdout
    assert "pushed" in pushed
    clone = tmp_path / "clone"
    clone.mkdir()
    _copy_checkout(pipeline, clone)  # what `git clone` would give: no outputs, no DVC cache
    assert not (clone / "models" / "backbone.pt").exists()
    assert not (clone / ".dvc" / "cache").exists()
    _run(["git", "init", "-q"], clone)
    _run(["dvc", "pull"], clone)
    for rel in ("models/backbone.pt", "models/arcface.onnx", "data/aligned/train/train.rec"):
        assert (clone / rel).read_bytes() == (pipeline / rel).read_bytes(), rel
    assert "up to date" in _run(["dvc", "status"], clone).stdout
    out = _run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out, out
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out, out


def test_changing_one_dataset_param_reruns_only_its_dependents(pipeline: Path) -> None:
    """More MegaFace distractors change the raw release and the aligned MegaFace set but not
    the aligned training data: once download and align have rerun, DVC has evaluate (and the
    exports, which check parity on those crops) to rerun, and not train. Reproducing only up
    to align and asking `dvc status` is the same decision `dvc repro` takes next, without
    paying for the evaluations it would then run (the first repro ran every stage)."""
    params_file = pipeline / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["data"]["sources"]["synthface"]["options"]["megaface_distractors"] += 10
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro", "align"], pipeline).stdout
    assert "Running stage 'download@synthface'" in out
    assert "Running stage 'align'" in out
    pending = json.loads(_run(["dvc", "status", "--json"], pipeline).stdout)
    assert {"evaluate", "export"} <= set(pending), pending
    assert {f"evaluate_imported@{name}" for name in IMPORTS} <= set(pending), pending
    assert "train" not in pending, pending["train"]
    assert pending["evaluate"] == [{"changed deps": {"data/aligned/eval": "modified"}}], pending
