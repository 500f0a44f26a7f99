"""Face detectors: the Detection type, the registry, RetinaFace's decoding and code path.

Real RetinaFace weights cannot be fetched here, so the ResNet-50 code path runs on a randomly
initialised network saved to a file: shapes, dtypes, empty results, strict loading, errors,
agreement with retinaface-pytorch's own single-image predictor, and the geometry (resize,
padding, scaling back, clipping) through a stub network with one known anchor.
"""

from __future__ import annotations

import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from arcflow.align.detectors import (
    DETECTORS,
    Detection,
    Detector,
    check_images,
    get_detector,
)
from arcflow.align.detectors.priors import decode_boxes, decode_landmarks, nms, prior_boxes
from arcflow.align.detectors.retinaface import RetinaFaceDetector, build_network, load_state_dict
from arcflow.errors import ConfigError, DataFormatError

pytestmark = pytest.mark.unit


# --- Detection and the registry ---------------------------------------------------------------


def test_detection_coerces_to_read_only_float32() -> None:
    det = Detection(
        boxes=[[1, 2, 3, 4]], scores=np.array([0.5], np.float64), landmarks=np.ones((1, 5, 2))
    )
    assert len(det) == 1
    for array in (det.boxes, det.scores, det.landmarks):
        assert array.dtype == np.float32
        assert not array.flags.writeable
    assert det.boxes.shape == (1, 4) and det.landmarks.shape == (1, 5, 2)
    with pytest.raises(AttributeError):
        det.scores = np.zeros(1)  # type: ignore[misc]


def test_detection_empty() -> None:
    det = Detection.empty()
    assert len(det) == 0
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,)
    assert det.landmarks.shape == (0, 5, 2)
    assert Detection(boxes=[], scores=[], landmarks=[]).boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("boxes", "scores", "landmarks"),
    [
        (np.zeros((2, 4)), np.zeros(1), np.zeros((1, 5, 2))),
        (np.zeros((1, 5)), np.zeros(1), np.zeros((1, 5, 2))),
        (np.zeros((1, 4)), np.zeros(1), np.zeros((1, 10))),
        (np.zeros((1, 4)), np.zeros((1, 1)), np.zeros((1, 5, 2))),
    ],
)
def test_detection_rejects_inconsistent_shapes(boxes, scores, landmarks) -> None:
    with pytest.raises(ValueError, match="Detection"):
        Detection(boxes=boxes, scores=scores, landmarks=landmarks)


def test_get_detector_unknown_name_lists_the_names() -> None:
    with pytest.raises(ValueError, match="mtcnn, retinaface, retinaface_mnet"):
        get_detector("dlib")
    assert DETECTORS == ("mtcnn", "retinaface", "retinaface_mnet")


def test_get_detector_retinaface_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="weights"):
        get_detector("retinaface")
    with pytest.raises(ConfigError, match="not found"):
        get_detector("retinaface", weights=tmp_path / "missing.pth")


def test_check_images_rejects_wrong_inputs() -> None:
    ok = np.zeros((4, 5, 3), np.uint8)
    assert check_images([ok, ok]) == [ok, ok]
    with pytest.raises(TypeError, match="sequence"):
        check_images(ok)
    with pytest.raises(ValueError, match="image 1"):
        check_images([ok, np.zeros((4, 5, 3), np.float32)])
    with pytest.raises(ValueError, match="image 0"):
        check_images([np.zeros((4, 5), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        check_images([np.zeros((0, 5, 3), np.uint8)])


def test_mtcnn_detector_without_faces_and_tiny_images() -> None:
    pytest.importorskip("facenet_pytorch")
    det = get_detector("mtcnn", device="cpu")
    assert isinstance(det, Detector) and det.name == "mtcnn"
    images = [np.full((64, 80, 3), 127, np.uint8), np.zeros((8, 8, 3), np.uint8)]
    results = det.detect(images)
    assert [len(r) for r in results] == [0, 0]
    assert det.detect([]) == []
    with pytest.raises(ValueError, match="thresholds"):
        get_detector("mtcnn", thresholds=(0.6, 0.7))


# --- RetinaFace decoding: hand-computed values ------------------------------------------------


def test_prior_boxes_hand_computed_square() -> None:
    priors = prior_boxes(32, 32)
    # stride 8: 4x4 cells x 2 sizes; stride 16: 2x2 x 2; stride 32: 1x1 x 2
    assert priors.shape == (32 + 8 + 2, 4)
    np.testing.assert_allclose(priors[0], [0.125, 0.125, 0.5, 0.5])  # cell (0,0), 16 px
    np.testing.assert_allclose(priors[1], [0.125, 0.125, 1.0, 1.0])  # cell (0,0), 32 px
    np.testing.assert_allclose(priors[2], [0.375, 0.125, 0.5, 0.5])  # cell (0,1): x moves
    np.testing.assert_allclose(priors[8], [0.125, 0.375, 0.5, 0.5])  # cell (1,0): y moves
    np.testing.assert_allclose(priors[32], [0.25, 0.25, 2.0, 2.0])  # stride 16, 64 px
    np.testing.assert_allclose(priors[40], [0.5, 0.5, 8.0, 8.0])  # stride 32, 256 px
    np.testing.assert_allclose(priors[41], [0.5, 0.5, 16.0, 16.0])  # stride 32, 512 px


def test_prior_boxes_hand_computed_non_square() -> None:
    priors = prior_boxes(64, 32)  # 64 high, 32 wide: x relative to 32, y relative to 64
    assert priors.shape == ((8 * 4 + 4 * 2 + 2 * 1) * 2, 4)
    np.testing.assert_allclose(priors[0], [4 / 32, 4 / 64, 16 / 32, 16 / 64])
    np.testing.assert_allclose(priors[2 * 4], [4 / 32, 12 / 64, 16 / 32, 16 / 64])  # row 1
    # ceil: a 40x40 input has 5x5 cells at stride 8, 3x3 at 16, 2x2 at 32
    assert prior_boxes(40, 40).shape == ((25 + 9 + 4) * 2, 4)


def test_decode_boxes_hand_computed() -> None:
    priors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    loc = np.array([[1.0, -2.0, float(np.log(2.0)) / 0.2, 0.0]], np.float32)
    # centre: 0.5 + 1*0.1*0.2 = 0.52, 0.5 - 2*0.1*0.4 = 0.42; size: 0.2*2 = 0.4, 0.4*1 = 0.4
    np.testing.assert_allclose(decode_boxes(loc, priors), [[0.32, 0.22, 0.72, 0.62]], atol=1e-6)
    # batched: a leading batch dimension decodes each item against the same priors
    batched = decode_boxes(np.stack([loc, np.zeros((1, 4), np.float32)]), priors)
    np.testing.assert_allclose(batched[1], [[0.4, 0.3, 0.6, 0.7]], atol=1e-6)


def test_decode_landmarks_hand_computed() -> None:
    priors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    pre = np.array([[k * s for k in range(5) for s in (1.0, -1.0)]], np.float32)
    points = decode_landmarks(pre, priors)
    expected = [[0.5 + k * 0.1 * 0.2, 0.5 - k * 0.1 * 0.4] for k in range(5)]
    assert points.shape == (1, 5, 2)
    np.testing.assert_allclose(points[0], expected, atol=1e-6)


def test_decoding_matches_retinaface_pytorch() -> None:
    from retinaface.box_utils import decode, decode_landm
    from retinaface.prior_box import priorbox

    height, width = 72, 100  # not multiples of the strides: exercises the ceil
    ours = prior_boxes(height, width)
    theirs = priorbox(
        min_sizes=[[16, 32], [64, 128], [256, 512]],
        steps=[8, 16, 32],
        clip=False,
        image_size=(height, width),
    )
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1.3e-6, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(len(ours), 4, generator=gen)
    land = torch.randn(len(ours), 10, generator=gen)
    np.testing.assert_allclose(
        decode_boxes(loc.numpy(), ours),
        decode(loc, theirs, [0.1, 0.2]).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        decode_landmarks(land.numpy(), ours).reshape(-1, 10),
        decode_landm(land, theirs, [0.1, 0.2]).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_nms_keeps_what_torchvision_keeps() -> None:
    """Random overlapping boxes (and exact duplicates, empty boxes): the same indices in the
    same order as torchvision.ops.nms, at several IoU thresholds."""
    from torchvision.ops import nms as torchvision_nms

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 300))
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        wh = rng.uniform(0, 60, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        boxes[: n // 10] = boxes[n // 10 : 2 * (n // 10)]  # duplicates
        scores = rng.permutation(n).astype(np.float32) / n  # distinct: the order is defined
        for iou in (0.3, 0.4, 0.7, 1.0):
            want = torchvision_nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou)
            np.testing.assert_array_equal(nms(boxes, scores, iou), want.numpy(), f"{trial} {iou}")


# --- RetinaFace with random weights -----------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _flush_denormals() -> Iterator[None]:
    """A random ResNet-50 drives activations into denormals, which are ~20x slower on CPU."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_network().state_dict()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory, random_state) -> Path:
    path = tmp_path_factory.mktemp("retinaface") / "random_resnet50.pth"
    torch.save(random_state, path)
    return path


@pytest.fixture(scope="module")
def detector(random_weights: Path) -> RetinaFaceDetector:
    return RetinaFaceDetector(random_weights, max_size=64, confidence_threshold=0.5, device="cpu")


def test_building_the_network_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    net = build_network()
    assert sum(p.numel() for p in net.parameters()) > 20_000_000  # ResNet-50 sized


def test_random_weights_code_path(detector: RetinaFaceDetector) -> None:
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (100, 30, 3), dtype=np.uint8),  # portrait: padded canvas
        rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),  # upscaled to 64
    ]
    results = detector.detect(images)
    assert isinstance(detector, Detector) and detector.name == "retinaface"
    assert len(results) == 3
    for det, image in zip(results, images, strict=True):
        height, width = image.shape[:2]
        assert det.boxes.dtype == det.scores.dtype == det.landmarks.dtype == np.float32
        assert det.boxes.shape == (len(det), 4) and det.landmarks.shape == (len(det), 5, 2)
        assert len(det) <= detector.keep_top_k
        assert (det.scores > 0.5).all() and (det.scores <= 1).all()
        assert (np.diff(det.scores) <= 0).all(), "most confident first"
        assert (det.boxes[:, [0, 1]] >= 0).all() and (det.boxes[:, 2] <= width).all()
        assert (det.boxes[:, 3] <= height).all()
        assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (
            det.boxes[:, 3] > det.boxes[:, 1]
        ).all()
    assert sum(len(d) for d in results) > 0  # random weights are confident about noise
    # an image's result does not depend on the other images of the call
    for i, image in enumerate(images):
        alone = detector.detect([image])[0]
        np.testing.assert_allclose(alone.scores, results[i].scores, atol=1e-5)
        np.testing.assert_allclose(alone.landmarks, results[i].landmarks, atol=1e-3)
    assert detector.detect([]) == []


def test_random_weights_empty_results(random_weights: Path) -> None:
    det = RetinaFaceDetector(random_weights, max_size=64, confidence_threshold=1.0, device="cpu")
    results = det.detect([np.zeros((40, 64, 3), np.uint8), np.zeros((64, 40, 3), np.uint8)])
    assert [len(r) for r in results] == [0, 0]
    assert all(r.boxes.shape == (0, 4) and r.landmarks.shape == (0, 5, 2) for r in results)


@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")  # the package's Model
def test_matches_retinaface_pytorch_predictor(random_weights: Path, random_state) -> None:
    """Same weights, an image needing no resize or padding: the package's own predictor agrees."""
    from retinaface.predict_single import Model

    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    ours = RetinaFaceDetector(
        random_weights, max_size=128, confidence_threshold=0.9, keep_top_k=10_000, device="cpu"
    ).detect([image])[0]
    model = Model(max_size=128, device="cpu")
    model.load_state_dict(random_state)
    model.eval()
    theirs = [a for a in model.predict_jsons(image[:, :, ::-1].copy(), 0.9, 0.4) if a["bbox"]]
    assert len(ours) == len(theirs) > 0
    # the package rounds to 2 decimals and orders ties arbitrarily: match by landmarks
    their_points = np.array([a["landmarks"] for a in theirs], np.float32).reshape(-1, 10)
    their_scores = np.array([a["score"] for a in theirs], np.float32)
    distance = np.abs(their_points[:, None] - ours.landmarks.reshape(1, -1, 10)).max(-1)
    match = distance.argmin(1)
    assert distance.min(1).max() < 0.01
    assert sorted(match.tolist()) == list(range(len(ours)))
    np.testing.assert_allclose(ours.scores[match], their_scores, atol=0.006)


class _OneAnchor(nn.Module):
    """Stands in for the network: one confident face per image, at the stride-8 anchor of
    size 32 px in cell (row 1, column 2): centre (20, 12) px of the network input."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.inputs.append(x.clone())
        count = len(prior_boxes(x.shape[2], x.shape[3]))
        index = (1 * (x.shape[3] // 8) + 2) * 2 + 1  # level 0 comes first, 2 sizes per cell
        loc = torch.zeros(x.shape[0], count, 4)
        conf = torch.zeros(x.shape[0], count, 2)
        conf[:, :, 0] = 10.0  # background everywhere...
        conf[:, index] = torch.tensor([-10.0, 10.0])  # ...but there
        land = torch.zeros(x.shape[0], count, 10)
        land[:, index] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0, 0, -1.0, 0.0, 0.0, -1.0])
        return loc, conf, land


def test_geometry_resize_pad_scale_back_clip(detector: RetinaFaceDetector, monkeypatch) -> None:
    stub = _OneAnchor()
    monkeypatch.setattr(detector, "_model", stub)
    # A: 100 wide x 40 high -> 64 x 26 (x 0.64, y 0.65), padded to 64 x 32
    # B: 40 wide x 80 high -> 32 x 64 (x 0.8), no padding
    image_a = np.full((40, 100, 3), (100, 150, 200), np.uint8)  # BGR
    image_b = np.zeros((80, 40, 3), np.uint8)
    det_a, det_b = detector.detect([image_a, image_b])

    x_a, x_b = stub.inputs  # one forward per padded input size
    assert x_a.shape == (1, 3, 32, 64) and x_b.shape == (1, 3, 64, 32)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(x_a[0, :, 5, 5], ((200, 150, 100) - mean) / std, rtol=1e-5)  # RGB
    np.testing.assert_allclose(x_a[0, :, 25, 63], ((200, 150, 100) - mean) / std, rtol=1e-5)
    assert (x_a[0, :, 26:, :] == 0).all(), "padding below image A is the mean colour"

    # input box: centre (20, 12), size 32 -> (4, -4, 36, 28); points centre + reg * 0.1 * 32
    points = np.array([[23.2, 12], [20, 15.2], [20, 12], [16.8, 12], [20, 8.8]])
    assert len(det_a) == len(det_b) == 1
    fx, fy = 100 / 64, 40 / 26  # back to image pixels, per axis
    np.testing.assert_allclose(det_a.boxes[0], [4 * fx, 0, 36 * fx, 40], rtol=1e-5)  # y clipped
    np.testing.assert_allclose(det_a.landmarks[0], points * [fx, fy], rtol=1e-5)
    np.testing.assert_allclose(det_b.boxes[0], [5, 0, 40, 35], rtol=1e-5)  # x2 clipped at 40
    np.testing.assert_allclose(det_b.landmarks[0], points / 0.8, rtol=1e-5)
    assert det_a.scores[0] == pytest.approx(1.0)


# --- RetinaFace weights files -----------------------------------------------------------------


def test_weights_load_strictly_from_pth_and_release_zip(
    tmp_path: Path, random_weights: Path, random_state
) -> None:
    # the package's release: a zip holding one .pth
    release = tmp_path / "retinaface_resnet50_2020-07-20-f168fae3c.zip"
    with zipfile.ZipFile(release, "w") as archive:
        archive.write(random_weights, "retinaface_resnet50_2020-07-20.pth")
    # a training checkpoint: {"state_dict": {"model.<key>": ...}}
    checkpoint = tmp_path / "checkpoint.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in random_state.items()}}, checkpoint)
    for path in (random_weights, release, checkpoint):
        loaded = load_state_dict(path)
        assert loaded.keys() == random_state.keys()
        key = "BboxHead.0.conv1x1.weight"
        torch.testing.assert_close(loaded[key], random_state[key])
    det = RetinaFaceDetector(release, max_size=64, device="cpu")
    torch.testing.assert_close(
        det._model.state_dict()["LandmarkHead.2.conv1x1.bias"],
        random_state["LandmarkHead.2.conv1x1.bias"],
    )


def test_missing_weights_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        RetinaFaceDetector(tmp_path / "nope.pth")


def test_not_a_torch_file_is_a_data_format_error(tmp_path: Path) -> None:
    junk = tmp_path / "weights.pth"
    junk.write_text("<html>404 Not Found</html>")
    with pytest.raises(DataFormatError, match="not a PyTorch state dict"):
        RetinaFaceDetector(junk)


def test_other_model_weights_are_a_data_format_error(tmp_path: Path, random_state) -> None:
    other = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(
        DataFormatError, match=r"456 missing keys .*; 2 unexpected keys \(bias, weight\)"
    ):
        RetinaFaceDetector(other)
    # right keys, one wrong shape (e.g. a mobilenet head): named in the message
    state = dict(random_state)
    state["ClassHead.0.conv1x1.weight"] = torch.zeros(6, 256, 1, 1)
    wrong = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong)
    with pytest.raises(DataFormatError, match=r"ClassHead\.0\.conv1x1\.weight is \(6, 256, 1, 1\)"):
        RetinaFaceDetector(wrong)
    # a non-tensor payload is refused by the weights-only loader, nothing executed
    pickled = tmp_path / "object.pth"
    torch.save({"net": nn.Linear(3, 2)}, pickled)
    with pytest.raises(DataFormatError):
        RetinaFaceDetector(pickled)
