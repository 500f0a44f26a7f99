"""Verification sets aligned from their raw releases: AgeDB-30 (68-point ``.pts`` beside each
image, reduced to 5) and CFP (no annotations: the detector, with centre crops when it finds
nothing), written as insightface ``.bin`` pair sets in protocol order."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from arcflow.align.dataset import align_dataset
from arcflow.config import AlignParams
from arcflow.data.binpairs import load_bin, save_bin
from arcflow.data.protocols import agedb, calfw, ijb
from arcflow.data.protocols.cfp import CFPSplit, image_entry, read_cfp, write_cfp
from arcflow.data.synthface import SynthFaceSpec, iter_images
from arcflow.errors import ConfigError
from arcflow.face_template import warp_face
from tests.integration.test_align_release import _corrupt

pytestmark = pytest.mark.integration

SPEC = SynthFaceSpec(num_identities=4, images_per_identity=4, frame_size=144, seed=3)


def _pts68(five: np.ndarray) -> np.ndarray:
    """68 iBUG points whose insightface 5-point reduction is ``five``."""
    pts = np.tile(five.mean(axis=0), (68, 1))
    pts[[36, 39]], pts[[42, 45]] = five[0], five[1]
    pts[33], pts[48], pts[54] = five[2], five[3], five[4]
    return pts


def _jpeg(bgr: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.fixture
def agedb_release(tiny_release: Path, tmp_path: Path) -> tuple[Path, list, dict]:
    """A training split plus an AgeDB-layout set: 16 images, 2 splits of 4 pairs."""
    raw = tmp_path / "raw"
    _corrupt(tiny_release / "train.rec", raw / "train.rec", set())
    truth: dict[str, tuple[bytes, np.ndarray]] = {}
    names = []
    for identity, index, bgr, five in iter_images(SPEC):
        name = f"{identity}_Person{identity}_{20 + 10 * index}_m"
        rel = agedb.image_path(name)
        (raw / "agedb" / rel).parent.mkdir(parents=True, exist_ok=True)
        jpeg = _jpeg(bgr)
        (raw / "agedb" / rel).write_bytes(jpeg)
        agedb.write_pts((raw / "agedb" / rel).with_suffix(".pts"), _pts68(np.asarray(five)))
        truth[rel] = (jpeg, np.asarray(five))
        names.append((identity, name))

    def pair(a: int, b: int) -> agedb.AgeDBPair:
        (ia, na), (ib, nb) = names[a], names[b]
        return agedb.AgeDBPair(agedb.AgeDBImage(na, 20), agedb.AgeDBImage(nb, 50), ia == ib)

    splits = [
        agedb.AgeDBSplit((pair(0, 3), pair(4, 5), pair(0, 4), pair(1, 8))),
        agedb.AgeDBSplit((pair(8, 11), pair(12, 13), pair(9, 12), pair(2, 15))),
    ]
    agedb.write_agedb_protocol(raw / "agedb" / agedb.PROTOCOL_FILE, splits)
    return raw, splits, truth


def test_agedb_from_68_point_annotations(agedb_release, tmp_path: Path) -> None:
    raw, splits, truth = agedb_release
    (raw / "bins").mkdir()
    save_bin(raw / "bins" / "agedb_30.bin", [b"stale"] * 2, [True])  # superseded, not copied
    result = align_dataset(raw, tmp_path / "train", AlignParams(), eval_out=tmp_path / "eval")
    assert result is not None and result.shipped_bins == {}
    assert result.reports["agedb_30"].aligned == 12  # the 12 images the pairs name
    pairs = load_bin(tmp_path / "eval" / "agedb_30.bin")
    expected = [p for split in splits for p in split.pairs]
    assert pairs.issame.tolist() == [p.same for p in expected] == [True, True, False, False] * 2
    for k, p in enumerate(expected):  # protocol order; each crop from the ground-truth points
        for side, image in enumerate((p.first, p.second)):
            jpeg, five = truth[agedb.image_path(image.name)]
            frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert pairs.images[2 * k + side] == _jpeg(warp_face(frame, five, 112))


@pytest.fixture
def cfp_release(tiny_release: Path, tmp_path: Path) -> Path:
    """A training split plus a CFP-layout set: 4 subjects x (2 frontal + 2 profile) images,
    FF and FP protocols of 10 splits of 2 same + 2 different pairs."""
    raw = tmp_path / "raw"
    _corrupt(tiny_release / "train.rec", raw / "train.rec", set())
    frontal, profile = [], []
    for identity, index, bgr, _five in iter_images(SPEC):
        view = "frontal" if index < 2 else "profile"
        entry = image_entry(identity + 1, view, index % 2 + 1)
        (frontal if view == "frontal" else profile).append(entry)
        path = raw / "cfp" / "Protocol" / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        black = np.zeros((90, 60, 3), np.uint8)  # subject 1's first frontal image: no face
        path.write_bytes(_jpeg(black if entry == frontal[0] else bgr))
    split = CFPSplit(same=((1, 2), (3, 4)), diff=((1, 3), (5, 8)))  # the release has 10 splits
    write_cfp(raw / "cfp", frontal, profile, {"FF": [split] * 10, "FP": [split] * 10})
    return raw


def test_cfp_needs_a_detector(cfp_release: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cfp_fp, cfp_ff come without landmark annotations"):
        align_dataset(cfp_release, tmp_path / "train", AlignParams(detector="annotations"))


@pytest.mark.slow
def test_cfp_with_the_detector_and_centre_crops(cfp_release: Path, tmp_path: Path) -> None:
    cfg = AlignParams(detector="mtcnn")
    result = align_dataset(cfp_release, tmp_path / "train", cfg, eval_out=tmp_path / "eval")
    assert result is not None
    for name, protocol, n_pairs in (("cfp_fp", "FP", 40), ("cfp_ff", "FF", 40)):
        report = result.reports[name]
        assert report.aligned == report.total and not report.failures
        assert report.centre_crops >= 1  # the black frontal image 01 of subject 1 has no face
        pairs = load_bin(tmp_path / "eval" / f"{name}.bin")
        expected = read_cfp(cfp_release / "cfp", protocol)
        assert len(pairs.issame) == n_pairs == len(expected)
        assert pairs.issame.tolist() == [p.same for p in expected]
        crops = [cv2.imdecode(np.frombuffer(j, np.uint8), 1) for j in pairs.images]
        assert all(crop.shape == (112, 112, 3) for crop in crops)
        assert crops[0].max() == 0  # pair 1's first image: the black one, centre-cropped


@pytest.mark.parametrize("dataset", ["CALFW", "CPLFW"])
def test_cross_lfw_pairs_are_written_in_fold_order(
    dataset: str, tiny_release: Path, tmp_path: Path
) -> None:
    """pairs_<DATASET>.txt lists 10 positives then 10 negatives; the .bin interleaves them by
    fold (positive, negative, ...) so contiguous 10-fold evaluation sees both classes."""
    raw = tmp_path / "raw"
    _corrupt(tiny_release / "train.rec", raw / "train.rec", set())
    root = raw / dataset.lower()
    names, points, truth = [], [], {}
    for identity, index, bgr, five in iter_images(SPEC):
        name = f"P{identity}_{index:04d}.jpg"
        (root / "images").mkdir(parents=True, exist_ok=True)
        jpeg = _jpeg(bgr)
        (root / "images" / name).write_bytes(jpeg)
        names.append((identity, name))
        points.append(np.asarray(five, np.float32))
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        truth[name] = (frame, np.round(np.asarray(five, np.float32), 3))  # as the file has it
    ijb.write_name_5pts_score(
        root / "landmarks_5pts.txt",
        ijb.FivePoints(np.array([n for _, n in names]), np.stack(points), np.ones(len(points))),
    )
    same = [(a, b) for a, b in itertools.combinations(names, 2) if a[0] == b[0]][:10]
    diff = [(a, b) for a, b in itertools.combinations(names, 2) if a[0] != b[0]][:10]
    label = (lambda k: k + 1) if dataset == "CALFW" else (lambda k: 1)
    pairs = [calfw.LabeledPair(a[1], b[1], label(k)) for k, (a, b) in enumerate(same)]
    pairs += [calfw.LabeledPair(a[1], b[1], 0) for a, b in diff]
    calfw.write_pairs(root / f"pairs_{dataset}.txt", pairs)
    align_dataset(raw, tmp_path / "train", AlignParams(), eval_out=tmp_path / "eval")
    written = load_bin(tmp_path / "eval" / f"{dataset.lower()}.bin")
    assert written.issame.tolist() == [True, False] * 10
    for k, pair in enumerate(pairs[i] for i in calfw.fold_order(pairs)):
        for side, name in enumerate((pair.name1, pair.name2)):
            bgr, five = truth[name]
            assert written.images[2 * k + side] == _jpeg(warp_face(bgr, five, 112)), (k, side)
