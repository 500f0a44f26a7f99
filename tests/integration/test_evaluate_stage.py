"""The evaluate stage on the tiny aligned SynthFace release, logging to a real MLflow server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arcflow.config import BENCHMARK_NAMES, SynthFaceParams, TrackingParams
from arcflow.evaluate.thresholds import FARS, Thresholds, accepts, far_key
from arcflow.export.onnx import export_onnx
from arcflow.models import get_backbone
from arcflow.models.saving import load_backbone, save_backbone
from arcflow.tracking.run import start_run
from tests.conftest import run_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYNTHFACE = {"lfw", "cfp_fp", "agedb_30", "ytf", "megaface", "ijbc"}
PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _evaluate(*args: object, cwd: Path, env: dict[str, str] | None = None):
    return run_stage("evaluate", "--params", PARAMS, *args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained IResNet: its numbers are poor but every code path runs."""
    path = tmp_path_factory.mktemp("model") / "backbone.pt"
    kwargs = {"width": 0.25, "embedding_size": 64}
    save_backbone(path, get_backbone("r18", **kwargs), "r18", kwargs)
    return path


@pytest.fixture(scope="module")
def evaluated(
    tiny_aligned: Path, model: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """One run of the stage; returns its folder, MLflow run id and stderr."""
    work = tmp_path_factory.mktemp("evaluate")
    run_file = work / "mlflow_run.json"
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        with start_run(TrackingParams(), work, run_file, run_name="eval-test", tags={}):
            pass
    proc = _evaluate(
        "--data", tiny_aligned.parent / "eval", "--model", model, "--run", run_file,
        cwd=work, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return work, json.loads(run_file.read_text())["run_id"], proc.stderr


def test_every_benchmark_is_listed_and_synthface_ones_are_scored(
    evaluated: tuple[Path, str, str],
) -> None:
    work, _, stderr = evaluated
    metrics = json.loads((work / "metrics" / "eval.json").read_text())
    assert set(metrics) == set(BENCHMARK_NAMES)
    scored = {name for name, value in metrics.items() if value != "not available"}
    assert scored == SYNTHFACE
    assert {"accuracy", "accuracy_std", "val", "far", "auc", "eer"} <= set(metrics["lfw"])
    assert {"tar_far_1e-4", "plain_tar_far_1e-4", "1n_rank1", "1n_tpir_fpir_1e-2"} <= set(
        metrics["ijbc"]
    )
    assert {"rank1", "rank1_10", "tar_far_1e-6"} <= set(metrics["megaface"])
    for name in SYNTHFACE:
        assert (work / "plots" / "roc" / f"{name}.csv").read_text().startswith("fpr,tpr\n")
        assert (work / "plots" / "roc" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    report = (work / "reports" / "evaluation.md").read_text()
    assert "| IJB-B | | tar_far_1e-4 | not available | | |" in report
    assert "## Decision thresholds" in report and "IJB-C (template pairs: 300 genuine" in report
    assert report.splitlines()[2].startswith("**Data: synthface**, the embedded synthetic")
    assert "| LFW | " in report and "99.83" not in report  # tiny sets: no published numbers
    # 6,840 impostor pairs resolve FAR >= 1.5e-4: TAR@1e-4 is not a number, TAR@1e-3 is
    assert "| tar_far_1e-4 | below resolution (the set resolves FAR ≥ 0.00015) |" in report
    assert metrics["ijbc"]["tar_far_1e-4"] == "below resolution"
    assert isinstance(metrics["ijbc"]["tar_far_1e-3"], float)
    assert metrics["ijbc"]["resolution_far"] == pytest.approx(1 / 6840)
    assert "CALFW not available" in stderr


def test_metrics_figures_and_report_reach_mlflow(
    evaluated: tuple[Path, str, str], mlflow_server: str
) -> None:
    import mlflow

    _, run_id, _ = evaluated
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert {"eval.lfw.accuracy", "eval.ijbc.tar_far_1e-2", "eval.megaface.rank1"} <= set(
        run.data.metrics
    )
    assert run.data.tags["eval.iqiyi_vid"] == "not available"
    assert "eval.ijbc.tar_far_1e-4" not in run.data.metrics  # 6,840 impostors cannot resolve it
    assert run.data.tags["eval.ijbc.tar_far_1e-4"] == "below resolution"
    artifacts = {a.path for d in ("plots", "reports") for a in client.list_artifacts(run_id, d)}
    assert {"plots/roc.png", "reports/evaluation.md"} <= artifacts
    assert "thresholds.json" in {a.path for a in client.list_artifacts(run_id)}
    assert run.data.tags["thresholds.set"] == "ijbc"
    assert run.data.tags["thresholds.n_impostor"] == "6840"


def test_thresholds_name_the_set_and_leave_unresolved_fars_without_a_threshold(
    evaluated: tuple[Path, str, str],
) -> None:
    work, _, _ = evaluated
    doc = json.loads((work / "metrics" / "thresholds.json").read_text())
    th = Thresholds.from_dict(doc, "thresholds.json")
    # the tiny release: 20 IJB-C subjects, 6 templates each -> 36 * 20 * 19 / 2 impostor pairs
    assert (th.set_name, th.level, th.n_genuine, th.n_impostor) == ("ijbc", "template", 300, 6840)
    assert list(th.points) == ["far_1e-3"]
    assert th.unresolved == tuple(far_key(f) for f in FARS if f < 1e-3)


@pytest.fixture(scope="module")
def ijb_resolving_1e3(
    tiny_synthface: SynthFaceParams, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An aligned IJB-C-only SynthFace release of 8 subjects: 1,008 impostor pairs, the
    fewest subjects that resolve FAR 1e-3 (m = 1)."""
    from arcflow.align.dataset import align_dataset
    from arcflow.config import AlignParams
    from arcflow.data.synthface_release import write_release

    root = tmp_path_factory.mktemp("ijb8")
    params = tiny_synthface.model_copy(update={"val_identities": 8, "eval_sets": ["ijb"]})
    write_release(params, root / "raw")
    align_dataset(root / "raw", root / "train", AlignParams(workers=1), eval_out=root / "eval")
    return root / "eval"


def test_thresholds_reapplied_to_the_sets_own_scores_give_the_recorded_rates(
    ijb_resolving_1e3: Path, model: Path, tmp_path: Path
) -> None:
    import torch

    from arcflow.config import EvaluateParams
    from arcflow.evaluate.cache import FeatureCache
    from arcflow.evaluate.context import EvalContext
    from arcflow.evaluate.embed import load_encoder
    from arcflow.evaluate.suite import BY_NAME

    proc = _evaluate("--data", ijb_resolving_1e3, "--model", model, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    th = Thresholds.from_dict(json.loads((tmp_path / "metrics" / "thresholds.json").read_text()))
    assert (th.set_name, th.n_genuine, th.n_impostor) == ("ijbc", 8 * 15, 18 * 8 * 7)
    assert list(th.points) == ["far_1e-3"] and "thresholds on ijbc" in proc.stderr
    # the same features (from the stage's cache), scored again by the runner
    ctx = EvalContext(
        ijb_resolving_1e3,
        load_encoder(model, torch.device("cpu")),
        cache=FeatureCache(tmp_path / ".cache" / "features"),
    )
    scored = BY_NAME["ijbc"].run(ctx, EvaluateParams()).scores
    assert scored is not None and ctx.embedded == 0
    point = th.points["far_1e-3"]
    accepted = accepts(scored.scores, point.threshold)
    genuine = scored.genuine
    assert np.count_nonzero(accepted & ~genuine) / th.n_impostor == point.far_measured <= 1e-3
    assert np.count_nonzero(accepted & genuine) / th.n_genuine == point.tar
    report = (tmp_path / "reports" / "evaluation.md").read_text()
    assert f"| 1e-3 | {point.threshold:.6f} |" in report


def test_rescoring_reads_the_cache_and_onnx_gives_the_same_numbers(
    evaluated: tuple[Path, str, str], tiny_aligned: Path, model: Path
) -> None:
    work, _, _ = evaluated
    first = json.loads((work / "metrics" / "eval.json").read_text())
    data = tiny_aligned.parent / "eval"
    again = _evaluate("--data", data, "--model", model, cwd=work)
    assert again.returncode == 0, again.stderr
    assert "0 images embedded" in again.stderr
    assert json.loads((work / "metrics" / "eval.json").read_text()) == first

    export_onnx(load_backbone(model), work / "backbone.onnx")
    onnx = _evaluate(
        "--data", data, "--model", work / "backbone.onnx",
        "--metrics", work / "onnx.json", "--plots", work / "onnx_roc",
        "--report", work / "onnx.md", "--thresholds", work / "onnx_thresholds.json", cwd=work,
    )  # fmt: skip
    assert onnx.returncode == 0, onnx.stderr
    from_onnx = json.loads((work / "onnx.json").read_text())
    for name in SYNTHFACE:
        for key, value in first[name].items():
            assert from_onnx[name][key] == pytest.approx(value, abs=0.02), (name, key)


def test_a_corrupt_protocol_file_is_one_clear_error(
    tiny_aligned: Path, model: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "eval"
    shutil.copytree(tiny_aligned.parent / "eval", data)
    pairs = data / "protocols" / "ijbc" / "meta" / "ijbc_template_pair_label.txt"
    pairs.write_text(pairs.read_text().replace(" 0\n", " 7\n", 1))
    proc = _evaluate("--data", data, "--model", model, cwd=tmp_path)
    assert proc.returncode == 1
    assert "ijbc_template_pair_label.txt" in proc.stderr and "not 0 or 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics").exists()  # nothing half-written


def test_two_torchrun_processes_share_the_embedding(
    evaluated: tuple[Path, str, str], tiny_aligned: Path, model: Path, tmp_path: Path
) -> None:
    import numpy as np
    import yaml

    work, _, _ = evaluated
    params = yaml.safe_load(PARAMS.read_text())
    params["evaluate"]["devices"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _evaluate(
        "--params", tmp_path / "params.yaml", "--data", tiny_aligned.parent / "eval",
        "--model", model, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    single = json.loads((work / "metrics" / "eval.json").read_text())
    shared = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert shared.keys() == single.keys()
    for name in SYNTHFACE:
        for key, value in single[name].items():
            assert shared[name][key] == pytest.approx(value, abs=0.02), (name, key)
    ours = sorted((tmp_path / ".cache" / "features").rglob("*.npz"))
    model_dir = {p.parent.name for p in ours}.pop()  # the ONNX run cached under its own key
    theirs = sorted((work / ".cache" / "features" / model_dir).glob("*.npz"))
    assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == len(SYNTHFACE)
    for a, b in zip(ours, theirs, strict=True):
        with np.load(a) as x, np.load(b) as y:
            np.testing.assert_allclose(x["plain"], y["plain"], atol=1e-4)
            np.testing.assert_allclose(x["flipped"], y["flipped"], atol=1e-4)
