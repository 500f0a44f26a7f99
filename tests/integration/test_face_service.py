"""The face service on a small exported model: in-process pipeline and pyfunc, `mlflow models
serve` over HTTP with hostile inputs, and the `arcflow embed / verify / search` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from arcflow.config import AlignParams, ServeParams
from arcflow.data.binpairs import load_bin
from arcflow.errors import ConfigError, DataFormatError
from arcflow.evaluate.embed import Features, load_encoder, to_batch
from arcflow.evaluate.thresholds import accepts, calibrate, cosine_scores
from arcflow.export.onnx import export_onnx, to_float16
from arcflow.models import get_backbone
from arcflow.serve.bundle import CONFIG_NAME, read_bundle
from arcflow.serve.package import write_bundle
from arcflow.serve.pipeline import load_bundle
from tests.photos import insightface_photos
from tests.serving import images_body, post, scoring_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` (a decompression bomb's shape)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _bomb() -> bytes:
    """A real 20000 x 20000 greyscale PNG of zeros: about 20 KB compressed, 400 MP decoded."""
    import struct

    width = height = 20000
    raw = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(64)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_aligned: Path) -> Path:
    """A small backbone exported to ONNX (fp32 + fp16) and packed with thresholds
    calibrated on every pair of the tiny release's evaluation crops."""
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("face-model")
    model = get_backbone("r18", width=0.125, embedding_size=32).eval()
    export_onnx(model, work / "m.onnx", opset=18)
    to_float16(work / "m.onnx", work / "m16.onnx")
    crops = _calibration_crops(tiny_aligned)
    features = _evaluate_embedding(work / "m.onnx", crops.images)
    thresholds = calibrate(
        *_all_pairs(features, crops.labels), set_name="tiny", level="image", fars=(1e-3,)
    )
    write_bundle(
        work / "face_model",  # the name export gives it, not the artifact key
        backbone=work / "m.onnx",
        backbone_fp16=work / "m16.onnx",
        embedding_size=32,
        serve=ServeParams(),
        align=AlignParams(),
        thresholds=thresholds.to_dict(),
        card="# card\n",
    )
    return work


class _Crops:
    def __init__(self, images: list[bytes], labels: np.ndarray) -> None:
        self.images, self.labels = images, labels


def _calibration_crops(tiny_aligned: Path) -> _Crops:
    """Aligned crops of the tiny release's pair sets with identity labels (pairs of one
    identity share a label; other crops are distinct identities)."""
    pairs = load_bin(tiny_aligned.parent / "eval" / "lfw.bin")
    labels = np.arange(len(pairs.images))
    for i, same in enumerate(pairs.issame):
        if same:
            labels[2 * i + 1] = labels[2 * i]
    return _Crops(list(pairs.images), labels)


def _evaluate_embedding(onnx: Path, images: list[bytes]) -> np.ndarray:
    """Evaluate's embedding of crops: f(x) + f(flip(x)), L2-normalised (pair-set rule)."""
    encoder = load_encoder(onnx)
    batch = to_batch(images, "crops")
    return Features(encoder(batch), encoder(np.ascontiguousarray(batch[..., ::-1]))).combined()


def _all_pairs(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(emb), 1)
    return cosine_scores(emb[i], emb[j]), labels[i] == labels[j]


@pytest.fixture(scope="module")
def pipeline(model_dir: Path):
    return load_bundle(model_dir / "face_model")


@pytest.fixture(scope="module")
def photos() -> dict[str, Path]:
    return insightface_photos()


def test_aligned_crops_embed_exactly_as_evaluate_does(
    pipeline, model_dir: Path, tiny_aligned: Path
) -> None:
    crops = _calibration_crops(tiny_aligned)
    expected = _evaluate_embedding(model_dir / "m.onnx", crops.images)
    result = pipeline.analyze(crops.images, aligned=True)
    assert not result.errors
    got = np.stack([f.embedding for f in result.faces])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_verify_reproduces_the_calibrated_rates_on_the_calibration_set(
    pipeline, tiny_aligned: Path
) -> None:
    """Every pair of the calibration set through the service's decision: the share of
    impostors it accepts is exactly the FAR recorded at calibration, and so is the TAR."""
    crops = _calibration_crops(tiny_aligned)
    result = pipeline.analyze(crops.images, aligned=True)
    i, j = np.triu_indices(len(crops.images), 1)
    genuine = crops.labels[i] == crops.labels[j]
    decisions = [pipeline.decide_pair(result, a, b, 1e-3) for a, b in zip(i, j, strict=True)]
    same = np.array([d.same_person for d in decisions])
    point = pipeline.thresholds.at(1e-3)
    assert same[~genuine].mean() == pytest.approx(point.far_measured, abs=1e-12)
    assert same[genuine].mean() == pytest.approx(point.tar, abs=1e-12)
    assert point.far_measured <= 1e-3 and pipeline.thresholds.n_impostor >= 1000
    scores = np.array([d.score for d in decisions])
    np.testing.assert_array_equal(same, accepts(scores, point.threshold))


def test_real_photos_give_their_faces_and_bad_items_their_errors(pipeline, photos) -> None:
    group, portrait = photos["t1.jpg"].read_bytes(), photos["Tom_Hanks_54745.png"].read_bytes()
    items = [group, portrait, b"", b"not an image", group[: len(group) // 2], _bomb()]
    result = pipeline.analyze(items)
    per_image = np.bincount([f.image for f in result.faces], minlength=len(items))
    assert per_image.tolist() == [6, 1, 0, 0, 0, 0]
    reasons = {e.image: e.reason for e in result.errors}
    assert reasons == {2: "empty", 3: "unsupported", 4: "corrupt", 5: "too_large"}
    for face in result.faces:
        left, right, nose, mouth_l, mouth_r = face.landmarks
        assert left[0] < right[0] and mouth_l[0] < mouth_r[0] and nose[1] < mouth_l[1]
    assert pipeline.analyze([group], max_faces=2).faces[1].face == 1
    assert len(pipeline.analyze([group], max_faces=2).faces) == 2
    blank = cv2.imencode(".png", np.full((480, 640, 3), 127, np.uint8))[1].tobytes()
    assert pipeline.analyze([blank]).errors[0].reason == "no_face"


_WITHOUT_TORCH = """
import importlib.abc, json, sys
from pathlib import Path

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "facenet_pytorch", "pydantic"}:
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, Refuse())
from arcflow.serve.pipeline import load_bundle

result = load_bundle(sys.argv[1]).analyze([Path(p) for p in sys.argv[2:]])
third = {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
print(json.dumps({"emb": [f.embedding.tolist() for f in result.faces],
                  "images": [f.image for f in result.faces],
                  "modules": sorted(m for m in third if not m.startswith("_"))}))
"""


def test_the_default_pipeline_needs_no_torch(model_dir: Path, pipeline, photos) -> None:
    """What the served model's pip requirements promise: with torch, torchvision and pydantic
    unimportable, the retinaface_mnet pipeline gives the same faces and embeddings."""
    from arcflow.serve.pyfunc import REQUIREMENTS

    paths = [str(photos["t1.jpg"]), str(photos["Tom_Hanks_54745.png"])]
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, str(model_dir / "face_model"), *paths],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["images"] == [0] * 6 + [1]
    local = pipeline.analyze([Path(p) for p in paths])
    np.testing.assert_allclose(out["emb"], [f.embedding for f in local.faces], atol=1e-6)
    imports = {"cv2": "opencv-python-headless", "numpy": "numpy", "onnxruntime": "onnxruntime"}
    assert set(out["modules"]) - {"arcflow"} <= set(imports), out["modules"]
    assert {imports[m] for m in out["modules"] if m in imports} <= set(REQUIREMENTS)


def test_fp16_variant_is_selectable_and_close(model_dir: Path, photos) -> None:
    fp32 = load_bundle(model_dir / "face_model")
    fp16 = load_bundle(model_dir / "face_model", precision="fp16")
    image = photos["Tom_Hanks_54745.png"]
    a, b = fp32.analyze([image]).faces[0], fp16.analyze([image]).faces[0]
    assert 0.999 < float(a.embedding @ b.embedding) < 1.0


def test_paths_are_read_only_under_the_allowed_root(pipeline, photos, tmp_path: Path) -> None:
    image = photos["Tom_Hanks_54745.png"]
    assert pipeline.analyze([image], allow_paths=False).errors[0].reason == "forbidden"
    outside = pipeline.analyze([image], root=tmp_path).errors[0]
    assert outside.reason == "forbidden" and "outside" in outside.message
    assert pipeline.analyze([tmp_path / "x.jpg"]).errors[0].reason == "not_found"
    with pytest.raises(ConfigError, match="at most"):
        pipeline.analyze([b"x"] * (pipeline.bundle.limits.max_images + 1))


def test_a_tampered_bundle_is_refused_with_the_field_named(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(model_dir / "face_model", bundle)
    config = json.loads((bundle / CONFIG_NAME).read_text())
    for key, value, message in (
        ("backbone", "../m.onnx", "backbone: expected a file name inside the bundle"),
        ("detector", "yolo", "detector: 'yolo' is not one of"),
        ("min_score", float("nan"), "min_score: expected a number"),
        ("thresholds", {"set": "x"}, "thresholds"),
    ):
        (bundle / CONFIG_NAME).write_text(json.dumps({**config, key: value}))
        with pytest.raises(DataFormatError, match=message):
            load_bundle(bundle)
    (bundle / CONFIG_NAME).write_text("{")
    with pytest.raises(DataFormatError, match="not JSON"):
        read_bundle(bundle)


# ------------------------------------------------------------------ REST and MLflow


@pytest.fixture(scope="module")
def logged(model_dir: Path, mlflow_server: str) -> Iterator[str]:
    """The bundle logged as the pyfunc face model on the MLflow server; its model URI."""
    import mlflow

    from arcflow.serve.pyfunc import log_face_model

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("face-service-tests")
    bundle = read_bundle(model_dir / "face_model")
    with mlflow.start_run():
        info = log_face_model(model_dir / "face_model", bundle, name="arcface")
    yield info.model_uri


@pytest.fixture(scope="module")
def server(logged: str, mlflow_server: str, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """`mlflow models serve` of the logged face model on a free loopback port."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with scoring_server(logged, {"MLFLOW_TRACKING_URI": mlflow_server}, log) as served:
        yield served


def _rss_mb(pid: int) -> float:
    total = 0.0
    for line in subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    ).stdout.split():
        total += float(line) / 1024
    return total


def test_rest_serves_the_photos_like_the_in_process_pyfunc(server, logged: str, photos) -> None:
    import mlflow.pyfunc
    import pandas as pd

    url, _ = server
    group, portrait = photos["t1.jpg"].read_bytes(), photos["Tom_Hanks_54745.png"].read_bytes()
    status, body = post(url, images_body(group, portrait))
    assert status == 200, body
    rows = body["predictions"]
    assert [r["image"] for r in rows].count(0) == 6 and [r["image"] for r in rows].count(1) == 1
    local = mlflow.pyfunc.load_model(logged).predict(pd.DataFrame({"image": [group, portrait]}))
    np.testing.assert_allclose(
        np.array([r["embedding"] for r in rows]), np.stack(local["embedding"]), atol=1e-5
    )
    verify = {"task": "verify", "far": 1e-3}
    status, body = post(url, {**images_body(portrait, portrait), "params": verify})
    decision = body["predictions"][0]
    assert status == 200 and decision["score"] == pytest.approx(1.0, abs=1e-5)
    assert decision["same_person"] is (decision["score"] > decision["threshold"])
    assert decision["far_calibrated"] == 1e-3 and decision["far_measured"] <= 1e-3


# A process in which the installed (editable) arcflow cannot be imported.
WITHOUT_ARCFLOW = """\
import json, sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if p not in ("", sys.argv[3])]
try:
    import arcflow
    raise SystemExit(f"arcflow is still importable from {arcflow.__file__}")
except ModuleNotFoundError:
    pass
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = model.predict(pd.DataFrame({"image": [open(sys.argv[2], "rb").read()]}))
import arcflow
embedding = [float(v) for v in rows["embedding"][0]]
print(json.dumps({"arcflow": arcflow.__file__, "embedding": embedding}))
"""


def test_the_logged_model_carries_its_own_code(logged: str, photos, tmp_path: Path) -> None:
    """A model from code (nothing pickled) whose ``arcflow`` is its own ``code`` artifact, one
    zip: it loads and embeds where the installed ``arcflow`` is hidden, as the in-process one."""
    import mlflow.artifacts
    import mlflow.pyfunc
    import pandas as pd
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged, dst_path=str(tmp_path)))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("model_code.py") and "python_model" not in flavor
    assert sorted(p.name for p in (local / "artifacts").iterdir()) == ["arcflow.zip", "bundle"]
    portrait = photos["Tom_Hanks_54745.png"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [sys.executable, "-c", WITHOUT_ARCFLOW, str(local), str(portrait), str(ROOT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["arcflow"].startswith(str(local / "artifacts" / "arcflow.zip"))
    expected = mlflow.pyfunc.load_model(logged).predict(
        pd.DataFrame({"image": [portrait.read_bytes()]})
    )
    np.testing.assert_allclose(result["embedding"], expected["embedding"][0], atol=1e-5)


def test_rest_survives_hostile_input_with_per_item_errors(server, photos) -> None:
    url, pid = server
    portrait = photos["Tom_Hanks_54745.png"].read_bytes()
    jpeg = photos["t1.jpg"].read_bytes()
    blank = cv2.imencode(".png", np.full((480, 640, 3), 127, np.uint8))[1].tobytes()
    bad = [b"not an image at all", b"", jpeg[: len(jpeg) // 2], _bomb(), _png(20000, 20000), blank]
    before = _rss_mb(pid)
    status, body = post(url, images_body(*bad, portrait))
    assert status == 200, body
    rows = {r["image"]: r for r in body["predictions"]}
    assert [rows[i]["reason"] for i in range(len(bad))] == [
        "unsupported", "empty", "corrupt", "too_large", "too_large", "no_face",
    ]  # fmt: skip
    assert rows[len(bad)]["error"] is None and len(rows[len(bad)]["embedding"]) == 32
    assert _rss_mb(pid) - before < 300  # nothing was decoded past the pixel limit
    for malformed in (b"{not json", b'{"dataframe_split": 3}', b'{"foo": []}'):
        status, _ = post(url, malformed)
        assert 400 <= status < 500, malformed
    assert post(url, {**images_body(portrait), "params": {"task": "nope"}})[0] == 400
    assert post(url, {**images_body(portrait), "params": {"task": "verify", "far": 1e-3}})[0] == 400
    status, body = post(url, {**images_body(portrait, portrait), "params": {"task": "verify"}})
    assert status == 400 and "FAR 0.0001 is not resolved" in body["message"]
    status, body = post(url, images_body(portrait))  # still up, still right
    assert status == 200 and body["predictions"][0]["error"] is None


# ------------------------------------------------------------------------------ CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    return subprocess.run(
        [sys.executable, "-m", "arcflow.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cli_embed_verify_search_end_to_end(
    model_dir: Path, photos, tmp_path: Path, logged: str, mlflow_server: str
) -> None:
    from arcflow.serve.embeddings_file import read_embeddings

    gallery = tmp_path / "gallery"
    for identity, name in (("tom", "Tom_Hanks_54745.png"), ("group", "t1.jpg")):
        (gallery / identity).mkdir(parents=True)
        (gallery / identity / name).write_bytes(photos[name].read_bytes())
    (gallery / "tom" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (gallery / "loose.png").write_bytes(photos["Tom_Hanks_54745.png"].read_bytes())  # no identity
    bundle = str(model_dir / "face_model")
    done = _cli("embed", str(gallery), "--out", str(tmp_path / "emb"), "-m", bundle, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 faces from 3 of 4 images (1 failed)" in done.stdout
    assert "broken.jpg" in done.stderr
    stored = read_embeddings(tmp_path / "emb")
    assert stored.count == 8 and sorted(set(stored.identity)) == ["", "group", "tom"]
    probe = str(photos["Tom_Hanks_54745.png"])
    for source in (str(tmp_path / "emb"), str(gallery)):
        found = _cli("search", probe, "--gallery", source, "-m", bundle, "-k", "3", cwd=tmp_path)
        assert found.returncode == 0, found.stderr
        rows = found.stdout.splitlines()[1:]
        # the portrait is in tom/ and loose at the top (no identity: ranked as its own face)
        assert sorted(r.split()[1] for r in rows[:2]) == ["(no", "tom"], found.stdout
        assert all("1.0000" in r for r in rows[:2]) and "loose.png" in found.stdout
        assert rows[2].split()[1] == "group", found.stdout
    same = _cli("verify", probe, probe, "-m", bundle, "--far", "1e-3", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert "same person: " in same.stdout and "on tiny" in same.stdout
    missing = _cli("verify", probe, str(tmp_path / "nope.jpg"), "-m", bundle, cwd=tmp_path)
    assert missing.returncode == 1 and "nope.jpg: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    unresolved = _cli("verify", probe, probe, "-m", bundle, "--far", "1e-6", cwd=tmp_path)
    assert unresolved.returncode == 1 and "not resolved" in unresolved.stderr
    env_cli = subprocess.run(
        [sys.executable, "-m", "arcflow.cli", "verify", probe, probe, "-m", "models:/nope@x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_server},
    )  # fmt: skip
    assert env_cli.returncode == 1 and "models:/nope@x: cannot load the model" in env_cli.stderr
    assert len(env_cli.stderr.strip().splitlines()) == 2  # error + hint, no traceback
    by_uri = subprocess.run(
        [sys.executable, "-m", "arcflow.cli", "verify", probe, probe, "-m", logged, "--far=1e-3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_server},
    )  # fmt: skip
    assert by_uri.returncode == 0 and same.stdout == by_uri.stdout, by_uri.stderr
