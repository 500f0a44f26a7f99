"""ONNX export: the recorded contract, onnx.checker, the parity gates, the stage's failures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from arcflow.errors import ExportError
from arcflow.export.onnx import (
    CONTRACT,
    _sort_topologically,
    check_parity,
    export_onnx,
    measure_speed,
    read_metadata,
    to_float16,
)
from arcflow.models import get_backbone
from arcflow.models.saving import save_backbone
from tests.conftest import run_stage

pytestmark = pytest.mark.integration

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return get_backbone("r18", width=0.125, embedding_size=32).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model, path = _tiny(0), tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(model, path, opset=18, metadata={"backbone": "r18"})
    return model, path


def test_the_contract_is_in_the_model_and_it_passes_the_checker(exported) -> None:
    import onnx

    _, path = exported
    meta = read_metadata(path)
    assert {k: meta[k] for k in CONTRACT} == CONTRACT and meta["backbone"] == "r18"
    assert "NOT L2-normalised" in meta["output"] and "(x / 255 - 0.5) / 0.5" in meta["input"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch axis


def test_parity_on_random_and_real_inputs(exported) -> None:
    model, path = exported
    real = np.random.default_rng(1).uniform(-1, 1, (5, 3, 112, 112)).astype(np.float32)
    report = check_parity(model, path, batch=3, real=real)
    assert report["parity_real"] == 5 and report["parity_batch"] == 3
    assert report["max_abs_diff"] <= 1e-4 and report["min_cosine"] >= 0.99999


def test_a_model_that_disagrees_fails_each_gate(exported) -> None:
    _, path = exported
    other = _tiny(1)  # same architecture, other weights: the ONNX file no longer matches
    with pytest.raises(ExportError, match="atol"):
        check_parity(other, path, batch=2)
    with pytest.raises(ExportError, match="cosine"):
        check_parity(other, path, batch=2, atol=1e9)


def test_float16_variant_keeps_the_float32_interface_and_passes_a_cosine_gate(
    exported, tmp_path: Path
) -> None:
    import onnx

    model, fp32 = exported
    path = tmp_path / "m16.onnx"
    to_float16(fp32, path, metadata={"backbone": "r18"})
    assert not [p for p in sys.path if Path(p).parts[-2:] == ("onnxruntime", "transformers")]
    graph = onnx.load(str(path)).graph
    float32 = onnx.TensorProto.FLOAT
    assert graph.input[0].type.tensor_type.elem_type == float32
    assert graph.output[0].type.tensor_type.elem_type == float32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert path.stat().st_size < 0.6 * fp32.stat().st_size
    metadata = read_metadata(path)
    assert metadata["precision"].startswith("float16") and metadata["backbone"] == "r18"
    assert metadata["output"] == CONTRACT["output"]
    report = check_parity(model, path, atol=float("inf"), min_cosine=0.999)
    assert 0.999 <= report["min_cosine"] < 1.0  # really float16: not bit-identical
    with pytest.raises(ExportError, match="cosine"):
        check_parity(model, path, atol=float("inf"), min_cosine=0.9999999)


def test_nodes_are_put_after_their_producers_and_a_dangling_input_is_refused() -> None:
    from onnx import TensorProto, helper

    def graph(*nodes):
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "z")]
        return helper.make_graph(list(nodes), "g", io[:1], io[1:])

    second = helper.make_node("Neg", ["y"], ["z"], name="second")
    g = graph(second, helper.make_node("Relu", ["x"], ["y"], name="first"))
    _sort_topologically(g)
    assert [n.name for n in g.node] == ["first", "second"]
    with pytest.raises(ExportError, match="second without its inputs"):
        _sort_topologically(graph(second))


def test_speed_report_compares_onnx_runtime_and_pytorch(exported) -> None:
    model, path = exported
    report = measure_speed(model, path, runs=3, batch=4)
    for engine in ("onnx", "torch"):
        assert report[f"{engine}_latency_ms_median"] > 0
        assert report[f"{engine}_latency_ms_p90"] >= report[f"{engine}_latency_ms_median"]
        assert report[f"{engine}_images_per_s_b4"] > 0


def test_stage_without_real_crops_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    kwargs = {"width": 0.125, "embedding_size": 32}
    save_backbone(tmp_path / "b.pt", get_backbone("r18", **kwargs), "r18", kwargs)
    (tmp_path / "eval").mkdir()
    proc = run_stage(
        "export", "--params", PARAMS, "--model", tmp_path / "b.pt", "--run", tmp_path / "r.json",
        "--out", tmp_path / "m.onnx", "--data", tmp_path / "eval", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no .bin pair set" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "metrics").exists()


def _run_and_metrics(folder: Path, mlflow_server: str) -> None:
    """What the stages before export leave: an MLflow run record and the eval metrics."""
    from arcflow.config import TrackingParams
    from arcflow.tracking.run import start_run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        with start_run(TrackingParams(), folder, folder / "r.json", run_name="x", tags={}):
            pass
    (folder / "metrics").mkdir()
    (folder / "metrics" / "eval.json").write_text(
        json.dumps({"lfw": {"accuracy": 0.75}, "ijbc": "not available"})
    )


def test_stage_logs_the_face_model_that_pyfunc_loads_to_evaluates_embeddings(
    tmp_path: Path, tiny_aligned: Path, mlflow_server: str
) -> None:
    import mlflow

    kwargs = {"width": 0.125, "embedding_size": 32}
    save_backbone(tmp_path / "b.pt", get_backbone("r18", **kwargs), "r18", kwargs)
    _run_and_metrics(tmp_path, mlflow_server)
    (tmp_path / "dvc.lock").write_text(
        "stages:\n  train:\n    deps:\n    - path: data/aligned/train\n      md5: f00.dir\n"
    )
    proc = run_stage(
        "export", "--params", PARAMS, "--model", tmp_path / "b.pt", "--run", tmp_path / "r.json",
        "--out", tmp_path / "m.onnx", "--data", tiny_aligned.parent / "eval",
        "--out-fp16", tmp_path / "m16.onnx", cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "metrics" / "export.json").read_text())
    assert report["fp16_min_cosine"] >= 0.999 and (tmp_path / "m16.onnx").is_file()
    info = json.loads((tmp_path / "models" / "onnx_model.json").read_text())
    mlflow.set_tracking_uri(mlflow_server)
    logged = mlflow.MlflowClient().get_logged_model(info["model_id"])
    metrics = {m.key: m.value for m in logged.metrics}
    assert metrics["eval.lfw.accuracy"] == 0.75 and not any("ijbc" in k for k in metrics)
    assert metrics["export.max_abs_diff"] <= 1e-4 and "export.onnx_latency_ms_median" in metrics
    assert logged.params["data.data/aligned/train"] == "f00.dir"
    assert len(logged.params["params_hash"]) == 64 and logged.params["data_version"] != "unknown"
    assert logged.tags["arcflow.git_commit"] == logged.params["git_commit"]
    import pandas as pd

    from arcflow.data.binpairs import load_bin
    from arcflow.evaluate.embed import Features, load_encoder, to_batch

    loaded = mlflow.pyfunc.load_model(info["model_uri"])
    crops = list(load_bin(tiny_aligned.parent / "eval" / "lfw.bin").images[:3])
    encoder = load_encoder(tmp_path / "m.onnx")
    batch = to_batch(crops, "crops")
    expected = Features(encoder(batch), encoder(batch[..., ::-1].copy())).combined()
    got = loaded.predict(pd.DataFrame({"image": crops}), params={"aligned": True})
    np.testing.assert_allclose(np.stack(got["embedding"]), expected, atol=1e-5)
    assert loaded.metadata.signature is not None
    assert (
        (tmp_path / "models" / "face_model" / "model_card.md")
        .read_text()
        .startswith("# Model card")
    )


def test_stage_exports_an_imported_model_with_its_provenance_and_licence(
    tmp_path: Path, tiny_aligned: Path, mlflow_server: str
) -> None:
    """An imported PyTorch checkpoint goes through the same parity gates; the logged model
    carries where it came from (no DVC data version: it was not trained here)."""
    import mlflow

    from arcflow.imports.model_import import import_model

    torch.save({"state_dict": _tiny(3).half().state_dict()}, tmp_path / "backbone.pth")
    record = import_model(str(tmp_path / "backbone.pth"), tmp_path / "imported", license="CC0")
    _run_and_metrics(tmp_path, mlflow_server)
    proc = run_stage(
        "export", "--params", PARAMS, "--model", tmp_path / "imported", "--run",
        tmp_path / "r.json", "--out", tmp_path / "m.onnx", "--data", tiny_aligned.parent / "eval",
        cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_server},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "models" / "onnx_model.json").read_text())
    logged = mlflow.MlflowClient(mlflow_server).get_logged_model(info["model_id"])
    assert logged.params["import.source"] == str(tmp_path / "backbone.pth")
    assert logged.params["import.sha256"] == record.sha256
    assert logged.params["import.license"] == "CC0"
    assert logged.params["import.stored_dtype"] == "float16"
    assert "data_version" not in logged.params
    assert {m.key: m.value for m in logged.metrics}["export.max_abs_diff"] <= 1e-4
    card = (tmp_path / "models" / "face_model" / "model_card.md").read_text()
    assert "**Imported**, trained outside ArcFlow" in card and "- Licence: CC0" in card
    assert "- Backbone: iresnet18 (width ×0.125), 32-d embedding" in card
    assert "SynthFace" not in card  # whatever the pipeline's own data is
