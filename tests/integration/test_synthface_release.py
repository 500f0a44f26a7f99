"""SynthFace writes every evaluation set in its real layout; the format readers agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arcflow.config import SynthFaceParams
from arcflow.data.binpairs import load_bin
from arcflow.data.protocols import ijb, megaface, ytf
from arcflow.data.protocols.lfw import image_path, read_pairs
from arcflow.data.synthface_release import iter_release, write_release
from arcflow.data.synthface_sets import LANDMARKS_FILE, identity_blocks, identity_name

pytestmark = pytest.mark.integration


def _names_with_landmarks(path: Path) -> set[str]:
    points = ijb.read_name_5pts_score(path)
    assert points.landmarks.shape == (len(points.names), 5, 2)
    return set(points.names.tolist())


def test_meta_counts(tiny_release: Path, tiny_synthface: SynthFaceParams) -> None:
    meta = json.loads((tiny_release / "meta.json").read_text())
    assert meta["params"] == tiny_synthface.model_dump()
    assert meta["train"] == {"identities": 6, "images": 24}
    assert sum(1 for _ in iter_release(tiny_release / "train.rec")) == 24


def test_identity_blocks_are_disjoint(tiny_synthface: SynthFaceParams) -> None:
    blocks = list(identity_blocks(tiny_synthface).values())
    ids = [k for block in blocks for k in block]
    assert len(ids) == len(set(ids))


def test_lfw_layout(tiny_release: Path, tiny_synthface: SynthFaceParams) -> None:
    lfw = tiny_release / "lfw"
    protocol = read_pairs(lfw / "pairs.txt")
    assert (protocol.folds, protocol.per_fold) == (10, 2)
    annotated = _names_with_landmarks(lfw / LANDMARKS_FILE)
    lfw_ids = {identity_name(k) for k in identity_blocks(tiny_synthface)["lfw"]}
    for fold in range(10):
        block = protocol.pairs[4 * fold : 4 * fold + 4]
        assert [p.same for p in block] == [True, True, False, False]
        for p in block:
            for name, n in ((p.name1, p.n1), (p.name2, p.n2)):
                assert name in lfw_ids and (lfw / image_path(name, n)).is_file()
                assert image_path(name, n) in annotated
            assert p.same or p.name1 != p.name2


@pytest.mark.parametrize("name", ["cfp_fp", "agedb_30"])
def test_shipped_bins_are_aligned_pair_sets(tiny_release: Path, name: str) -> None:
    import cv2

    pairs = load_bin(tiny_release / "bins" / f"{name}.bin")
    assert len(pairs) == 40 and pairs.issame.sum() == 20
    first = cv2.imdecode(np.frombuffer(pairs.images[0], np.uint8), cv2.IMREAD_COLOR)
    assert first.shape == (112, 112, 3)


def test_ijb_layout(tiny_release: Path) -> None:
    files = ijb.ijb_files(tiny_release / "ijb", "ijbc")
    meta = ijb.read_face_tid_mid(files.face_tid_mid)
    assert len(meta.names) == 20 * 6 * 2  # the same 12 images per subject as before
    assert _names_with_landmarks(files.name_5pts_score) == set(meta.names.tolist())
    assert all((files.loose_crop / n).is_file() for n in meta.names)
    for tid in np.unique(meta.template_ids):  # each template: one media of 2 frames
        media = meta.media_ids[meta.template_ids == tid]
        assert np.unique(media, return_counts=True)[1].tolist() == [2]
    pairs = ijb.read_template_pair_label(files.template_pair_label)
    subject = lambda tid: (tid - 1) // 6  # noqa: E731  (6 templates per subject)
    same = subject(pairs.template1) == subject(pairs.template2)
    np.testing.assert_array_equal(same, pairs.labels == 1)
    assert pairs.labels.sum() == 20 * 15 and (pairs.labels == 0).sum() == 36 * 20 * 19 // 2
    # every pair of templates once: C(120, 2)
    assert len(set(zip(pairs.template1.tolist(), pairs.template2.tolist(), strict=True))) == 7140
    assert (pairs.template1 < pairs.template2).all()


def test_the_default_ijb_resolves_far_1e_5() -> None:
    from arcflow.data.synthface_sets import ijb_template_pairs

    pairs = ijb_template_pairs(SynthFaceParams().val_identities)
    assert (pairs.labels == 0).sum() == 178_200 >= 100_000  # 1/FAR for FAR 1e-5
    assert pairs.labels.sum() == 1_500


def test_megaface_layout(tiny_release: Path, tiny_synthface: SynthFaceParams) -> None:
    root = tiny_release / "megaface"
    probes = megaface.read_feature_list(root / "templatelists" / megaface.FACESCRUB_LIST)
    assert len(probes.paths) == 20 * 3 and len(set(probes.ids)) == 20
    distractors = megaface.read_feature_list(
        root / "templatelists" / megaface.megaface_list_name(10)
    )
    assert len(distractors.paths) == 10 and distractors.ids is None
    assert all((root / "megaface_images" / p).is_file() for p in distractors.paths)
    assert all((root / "facescrub_images" / p).is_file() for p in probes.paths)
    assert len(_names_with_landmarks(root / LANDMARKS_FILE)) == 60 + 20


def test_ytf_layout(tiny_release: Path) -> None:
    root = tiny_release / "ytf"
    splits = ytf.read_splits(root / "splits.txt")
    assert len(splits.pairs) == 40 and {p.split for p in splits.pairs} == set(range(1, 11))
    annotated = _names_with_landmarks(root / LANDMARKS_FILE)
    for pair in splits.pairs:
        for video in (pair.video1, pair.video2):
            frames = ytf.video_frames(root, video)
            assert len(frames) == 4
            assert all(str(f.relative_to(root)) in annotated for f in frames)
        assert pair.same == (pair.video1.split("/")[0] == pair.video2.split("/")[0])


def test_generation_is_deterministic(tiny_release: Path, tiny_synthface, tmp_path: Path) -> None:
    params = tiny_synthface.model_copy(update={"eval_sets": ["lfw", "ijb"]})
    again = tmp_path / "again"
    write_release(params, again)
    for rel in (
        "train.rec",
        "lfw/pairs.txt",
        "lfw/landmarks_5pts.txt",
        "ijb/IJBC/meta/ijbc_template_pair_label.txt",
        "ijb/IJBC/loose_crop/7.jpg",
    ):
        assert (again / rel).read_bytes() == (tiny_release / rel).read_bytes(), rel
    assert not (again / "ytf").exists()
