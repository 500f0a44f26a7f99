"""Promotion, rollback, the race between two promotions and the champion's consumers, against a
real `mlflow server` (SQLite backend, proxied artifacts) started by the fixture."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from arcflow.config import ExportParams, RegistryParams
from arcflow.errors import RegistryError, TrackingError
from arcflow.evaluate.embed import load_encoder
from arcflow.export.onnx import export_onnx, ort_session
from arcflow.models import get_backbone
from arcflow.registry import CHALLENGER, CHAMPION, PREVIOUS, audit_log, promote, rollback
from arcflow.registry.lock import is_free, registry_lock
from arcflow.registry.store import aliases
from arcflow.serve.bundle import read_bundle
from arcflow.serve.pyfunc import log_face_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARITY = ExportParams()
PROVENANCE = {"git_commit": "0" * 40, "params_hash": "1" * 64, "data_version": "abcdef0123456789"}


def scores(primary: float, lfw: float = 0.99, **extra: float) -> dict[str, float]:
    """Benchmark and export metrics of a candidate that passes parity."""
    return {
        "eval.agedb_30.accuracy": primary,
        "eval.lfw.accuracy": lfw,
        "eval.cfp_fp.accuracy": 0.95,
        "export.max_abs_diff": 1e-6,
        "export.min_cosine": 0.9999999,
        "export.onnx_latency_ms_median": 2.0,
        **extra,
    }


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = get_backbone("r18", width=0.125, embedding_size=32).eval()
    path = tmp_path_factory.mktemp("registry") / "m.onnx"
    export_onnx(model, path, opset=18, metadata={"backbone": "r18"})
    return path


CARD = "# Model card: test\n\nlfw 0.99\n"


@pytest.fixture(scope="module")
def bundle_dir(onnx_file: Path) -> Path:
    """The face-service bundle of ``onnx_file`` (what the export stage logs)."""
    from arcflow.config import AlignParams, ServeParams
    from arcflow.serve.package import write_bundle

    out = onnx_file.parent / "bundle"
    write_bundle(
        out, backbone=onnx_file, backbone_fp16=None, embedding_size=32, serve=ServeParams(),
        align=AlignParams(), thresholds=None, card=CARD,
    )  # fmt: skip
    return out


@pytest.fixture()
def client(mlflow_server: str) -> Iterator[object]:
    import mlflow
    from mlflow import MlflowClient

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("registry-tests")
    yield MlflowClient(tracking_uri=mlflow_server)
    mlflow.set_tracking_uri(previous)


@pytest.fixture()
def gates() -> RegistryParams:
    """Gates on a registered model of this test's own (the server is shared by the session)."""
    return RegistryParams(
        model_name=f"arcface-{uuid.uuid4().hex[:8]}",
        primary_metric="eval.agedb_30.accuracy",
        min_improvement=0.01,
        max_regression=0.005,
        min_metrics={"eval.lfw.accuracy": 0.9},
        lock_timeout_s=60,
    )


@pytest.fixture()
def candidate(client, bundle_dir: Path) -> Callable[..., str]:
    """Log the face model in a run of its own with ``metrics``; returns its model id."""
    import mlflow

    def log(metrics: dict[str, float]) -> str:
        with mlflow.start_run():
            info = log_face_model(
                bundle_dir, read_bundle(bundle_dir), name="arcface", params=PROVENANCE
            )
            mlflow.log_metrics(metrics, model_id=info.model_id)
            return str(info.model_id)

    return log


def version_tags(client, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags)


def replays(events: list[dict]) -> None:
    """Each event starts from the champion the one before it left: no lost update."""
    for before, after in itertools.pairwise(events):
        assert after["champion_before"] == before["champion_after"], (before, after)


def test_first_model_becomes_champion_with_tags_audit_and_report(client, gates, candidate) -> None:
    model_id = candidate(scores(0.80))
    outcome = promote(client, gates, PARITY, model_id)
    assert outcome.promoted and outcome.version == "1" and outcome.champion_before is None
    assert aliases(client, gates.model_name) == {CHAMPION: "1"}  # challenger moved on
    tags = version_tags(client, gates.model_name, "1")
    assert tags["promotion.decision"] == "promoted" and tags["promotion.replaced"] == "none"
    assert tags["git_commit"] == PROVENANCE["git_commit"]
    assert tags["data_version"] == PROVENANCE["data_version"]
    assert ["absolute", "eval.lfw.accuracy", 0.99, 0.9, True] in json.loads(
        tags["promotion.comparison"]
    )
    [event] = audit_log(client, gates.model_name)
    assert event["event"] == "promoted" and event["champion_after"] == "1"
    run_id = client.get_model_version(gates.model_name, "1").run_id
    report = client.download_artifacts(run_id, f"promotion/{gates.model_name}-v1.md")
    assert "**Decision: promoted.**" in Path(report).read_text()


def test_a_first_model_below_an_absolute_gate_is_not_champion(client, gates, candidate) -> None:
    outcome = promote(client, gates, PARITY, candidate(scores(0.80, lfw=0.5)))
    assert not outcome.promoted
    assert aliases(client, gates.model_name) == {CHALLENGER: "1"}
    assert version_tags(client, gates.model_name, "1")["promotion.decision"] == "rejected"


@pytest.mark.parametrize(
    ("case", "metrics"),
    [
        ("no metrics", {}),
        ("only export metrics", {"export.max_abs_diff": 1e-6, "export.min_cosine": 1.0}),
        ("failed parity", scores(0.95, **{"export.max_abs_diff": 1e-2})),
        ("parity not recorded", {"eval.agedb_30.accuracy": 0.95, "eval.lfw.accuracy": 0.99}),
        ("primary not better by delta", scores(0.805)),
        ("a benchmark regresses", scores(0.95, lfw=0.97)),
    ],
)
def test_a_bad_candidate_is_never_promoted(
    client, gates, candidate, case: str, metrics: dict[str, float]
) -> None:
    promote(client, gates, PARITY, candidate(scores(0.80)))
    outcome = promote(client, gates, PARITY, candidate(metrics))
    assert not outcome.promoted, case
    assert aliases(client, gates.model_name) == {CHAMPION: "1", CHALLENGER: "2"}
    assert version_tags(client, gates.model_name, "2")["promotion.decision"] == "rejected"
    assert [e["event"] for e in audit_log(client, gates.model_name)] == ["promoted", "rejected"]


def test_a_better_candidate_replaces_the_champion_and_keeps_it_for_rollback(
    client, gates, candidate
) -> None:
    promote(client, gates, PARITY, candidate(scores(0.80)))
    outcome = promote(client, gates, PARITY, candidate(scores(0.85)))
    assert outcome.promoted and (outcome.champion_before, outcome.champion_after) == ("1", "2")
    assert aliases(client, gates.model_name) == {CHAMPION: "2", PREVIOUS: "1"}
    assert "| primary | `eval.agedb_30.accuracy` | 0.85 | 0.8 | +0.05 | pass |" in outcome.report
    assert version_tags(client, gates.model_name, "2")["promotion.replaced"] == "1"


def test_dry_run_decides_without_changing_anything(client, gates, candidate) -> None:
    promote(client, gates, PARITY, candidate(scores(0.80)))
    before = (aliases(client, gates.model_name), audit_log(client, gates.model_name))
    versions = len(client.search_model_versions(f"name='{gates.model_name}'"))
    outcome = promote(client, gates, PARITY, candidate(scores(0.90)), dry_run=True)
    assert outcome.promoted and outcome.version is None and "would be promoted" in outcome.report
    assert (aliases(client, gates.model_name), audit_log(client, gates.model_name)) == before
    assert len(client.search_model_versions(f"name='{gates.model_name}'")) == versions


def test_promoting_the_champion_again_changes_nothing(client, gates, candidate) -> None:
    model_id = candidate(scores(0.80))
    promote(client, gates, PARITY, model_id)
    again = promote(client, gates, PARITY, model_id)
    assert not again.promoted and "champion already" in again.decision.summary()
    assert len(audit_log(client, gates.model_name)) == 1


def test_rollback_restores_the_previous_champion_down_the_chain(client, gates, candidate) -> None:
    for primary in (0.80, 0.85, 0.90):
        assert promote(client, gates, PARITY, candidate(scores(primary))).promoted
    assert aliases(client, gates.model_name) == {CHAMPION: "3", PREVIOUS: "2"}
    dry = rollback(client, gates, dry_run=True)
    assert (dry.from_version, dry.to_version) == ("3", "2")
    assert aliases(client, gates.model_name) == {CHAMPION: "3", PREVIOUS: "2"}

    done = rollback(client, gates)
    assert (done.from_version, done.to_version, done.previous_after) == ("3", "2", "1")
    assert aliases(client, gates.model_name) == {CHAMPION: "2", PREVIOUS: "1"}
    assert "rollback.at" in version_tags(client, gates.model_name, "3")
    rollback(client, gates)
    assert aliases(client, gates.model_name) == {CHAMPION: "1"}
    with pytest.raises(RegistryError, match="no previous-champion"):
        rollback(client, gates)
    events = audit_log(client, gates.model_name)
    assert [e["event"] for e in events] == ["promoted"] * 3 + ["rollback"] * 2
    replays(events)


def test_two_promotions_racing_leave_one_champion_and_a_complete_audit_trail(
    client, gates, candidate, mlflow_server: str, tmp_path: Path
) -> None:
    promote(client, gates, PARITY, candidate(scores(0.80)))
    ids = [candidate(scores(0.85)), candidate(scores(0.90))]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["registry"] = gates.model_dump()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arcflow.cli",
                "promote",
                "--model-id",
                model_id,
                "--params",
                str(params),
                "--report",
                str(tmp_path / f"r{k}.md"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, model_id in enumerate(ids)
    ]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(code in (0, 3) for code, _, _ in results), results
    # Either order ends with the 0.90 model as champion: it beats both 0.80 and 0.85.
    events = audit_log(client, gates.model_name)
    assert len(events) == 3
    replays(events)
    champion = aliases(client, gates.model_name)[CHAMPION]
    assert events[-1]["champion_after"] == champion
    best = client.get_model_version(gates.model_name, champion)
    assert best.tags["promotion.decision"] == "promoted"
    assert json.loads(best.tags["promotion.comparison"])[0][0] == "metrics"
    assert {e["version"] for e in events[1:]} == {"2", "3"}
    promoted = [e for e in events if e["event"] == "promoted"]
    assert aliases(client, gates.model_name).get(PREVIOUS) == promoted[-1]["champion_before"]
    assert is_free(client, gates.model_name)


def test_the_lock_waits_for_its_holder_and_breaks_a_stale_one(client, gates) -> None:
    with registry_lock(client, gates.model_name, timeout_s=5, ttl_s=60):
        with (
            pytest.raises(RegistryError, match="is held by"),
            registry_lock(client, gates.model_name, timeout_s=0.5, ttl_s=60),
        ):
            pass
        with registry_lock(client, gates.model_name, timeout_s=5, ttl_s=0.01) as holder:
            assert holder  # the first holder looked dead after 10 ms: broken
    assert is_free(client, gates.model_name)


def test_champion_alias_loads_and_embeds(client, gates, candidate, onnx_file: Path) -> None:
    import cv2
    import mlflow
    import pandas as pd

    from arcflow.embedding import l2_normalize, normalise_crops

    promote(client, gates, PARITY, candidate(scores(0.80)))
    version = client.get_model_version(gates.model_name, "1")
    assert version.description == CARD  # every registered version carries the model card
    model = mlflow.pyfunc.load_model(f"models:/{gates.model_name}@champion")
    crops = np.random.default_rng(0).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    encoded = [cv2.imencode(".png", c)[1].tobytes() for c in crops]
    got = model.predict(pd.DataFrame({"image": encoded}), params={"aligned": True})
    x = normalise_crops(crops[..., ::-1])  # the PNGs hold BGR: the model sees RGB
    session = ort_session(onnx_file)
    raw = session.run(None, {"data": x})[0] + session.run(None, {"data": x[..., ::-1].copy()})[0]
    np.testing.assert_allclose(np.stack(got["embedding"]), l2_normalize(raw), atol=1e-5)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    expected = session.run(None, {"data": x})[0]
    encoder = load_encoder(f"models:/{gates.model_name}@champion")  # what evaluate --model takes
    np.testing.assert_allclose(encoder(x), expected, atol=1e-6)
    with pytest.raises(TrackingError, match="cannot download"):
        load_encoder(f"models:/{gates.model_name}@no-such-alias")


def test_cli_exit_codes_and_clean_errors(
    client, gates, candidate, mlflow_server: str, tmp_path: Path
) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["registry"] = gates.model_dump()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "arcflow.cli", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    missing = cli("promote")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "models/onnx_model.json: no exported model recorded" in missing.stderr
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "onnx_model.json").write_text(
        json.dumps({"model_id": candidate(scores(0.80))})
    )
    assert cli("promote", "--dry-run").returncode == 0
    assert not (tmp_path / "reports" / "promotion.md").read_text().count("FAIL")
    first = cli("promote")
    assert first.returncode == 0, first.stderr
    assert "**Decision: promoted.**" in first.stdout
    (tmp_path / "models" / "onnx_model.json").write_text(
        json.dumps({"model_id": candidate(scores(0.70))})
    )
    worse = cli("promote")
    assert worse.returncode == 3 and "**FAIL**" in worse.stdout
    shown = cli("champion")
    assert f"champion           {gates.model_name} version 1" in shown.stdout
    assert "rejected" in shown.stdout
    no_previous = cli("rollback")
    assert no_previous.returncode == 1 and "no previous-champion" in no_previous.stderr
