"""SynthFace: determinism, landmark geometry/exactness and a naive identity-signal check."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from arcflow.data.synthface import SynthFaceSpec, _Projector, iter_images, render, render_one
from arcflow.data.synthface_identity import Expression, Identity, Pose, identity_params
from arcflow.data.synthface_parts import LOCAL_ORIGIN, MARKER_COLORS, TEMPLATE_112, landmarks_local
from arcflow.data.synthface_sheet import contact_sheet

pytestmark = pytest.mark.unit

SPEC = SynthFaceSpec(num_identities=5, images_per_identity=4, seed=3)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) as a 2x3 matrix mapping src -> dst."""
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    sm, dm = src.mean(0), dst.mean(0)
    sc, dc = src - sm, dst - dm
    u, sig, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    k = (sig * d).sum() / ((sc**2).sum() / len(src))
    return np.hstack([k * rot, (dm - k * rot @ sm)[:, None]])


def _down_axis(lm: np.ndarray) -> np.ndarray:
    """Unit vector pointing from the eyes towards the chin in the face's own rotated frame."""
    e = lm[1] - lm[0]
    d = np.array([-e[1], e[0]])
    return d / np.linalg.norm(d)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes() -> None:
    a_img, a_lm = render_one(SPEC, 2, 1)
    b_img, b_lm = render_one(SPEC, 2, 1)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_lm.tobytes() == b_lm.tobytes()


def test_shapes_and_types() -> None:
    img, lm = render_one(replace(SPEC, frame_size=96), 0, 0)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert lm.shape == (5, 2) and lm.dtype == np.float32


def test_different_seed_or_index_differs() -> None:
    base, _ = render_one(SPEC, 1, 0)
    other_seed, _ = render_one(replace(SPEC, seed=4), 1, 0)
    other_index, _ = render_one(SPEC, 1, 1)
    assert base.tobytes() != other_seed.tobytes()
    assert base.tobytes() != other_index.tobytes()
    assert identity_params(3, 1) != identity_params(4, 1)


def test_single_image_equals_full_run() -> None:
    full = {(k, j): (img, lm) for k, j, img, lm in iter_images(SPEC)}
    assert len(full) == SPEC.num_identities * SPEC.images_per_identity
    for k, j in [(0, 0), (3, 2), (4, 3)]:
        img, lm = render_one(SPEC, k, j)
        assert img.tobytes() == full[k, j][0].tobytes()
        assert np.array_equal(lm, full[k, j][1])


def test_iter_images_subset_order() -> None:
    got = [(k, j) for k, j, _, _ in iter_images(SPEC, [4, 1])]
    assert got == [(4, 0), (4, 1), (4, 2), (4, 3), (1, 0), (1, 1), (1, 2), (1, 3)]


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        SynthFaceSpec(difficulty=1.5)
    with pytest.raises(ValueError):
        SynthFaceSpec(num_identities=0)


# --------------------------------------------------------------------------- identities


def test_identities_differ_in_landmark_geometry() -> None:
    """Similarity-invariant landmark ratios vary across identities (not only colours)."""
    ids = [identity_params(0, k) for k in range(200)]
    pts = np.array([landmarks_local(i, Expression()).pts for i in ids])
    eye_dist = pts[:, 1, 0] - pts[:, 0, 0]
    mouth_w = pts[:, 4, 0] - pts[:, 3, 0]
    eye_mouth = pts[:, 3, 1] - pts[:, 0, 1]
    nose_pos = (pts[:, 2, 1] - pts[:, 0, 1]) / eye_mouth
    for ratio in (mouth_w / eye_dist, eye_mouth / eye_dist, nose_pos):
        assert ratio.std() / ratio.mean() > 0.05
    assert len({(i.hair_style, i.glasses, i.beard) for i in ids}) > 10
    assert isinstance(ids[0], Identity)


def test_mean_frontal_geometry_matches_template() -> None:
    """Averaged over identities, neutral local landmarks sit on the ArcFace template."""
    pts = [landmarks_local(identity_params(1, k), Expression()).pts for k in range(300)]
    mean = np.mean(pts, axis=0) + LOCAL_ORIGIN
    np.testing.assert_allclose(mean, TEMPLATE_112, atol=1.5)


# --------------------------------------------------------------------------- landmarks


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_landmarks_inside_and_ordered(difficulty: float) -> None:
    spec = SynthFaceSpec(num_identities=12, images_per_identity=5, seed=7, difficulty=difficulty)
    for _, _, img, lm in iter_images(spec):
        size = img.shape[0]
        assert np.all(lm >= 0) and np.all(lm <= size - 1)
        down = _down_axis(lm)
        eyes, nose, mouth = (lm[0] + lm[1]) / 2, lm[2], (lm[3] + lm[4]) / 2
        assert (nose - eyes) @ down > 0
        assert (mouth - nose) @ down > 0
        if difficulty == 0.0:  # no roll: left/right by x
            assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
            assert lm[0, 1] < lm[2, 1] < lm[3, 1]


@pytest.mark.parametrize("difficulty", [0.5, 1.0])
def test_landmarks_hit_drawn_markers(difficulty: float) -> None:
    """The pixel under each landmark has the colour of the disc drawn there."""
    for k in range(15):
        idn = identity_params(11, k)
        rng = np.random.default_rng([11, k, 0, 1])
        img, lm = render(idn, rng, 144, difficulty=difficulty, markers=True)
        for p, col in zip(lm, MARKER_COLORS, strict=True):
            x, y = round(float(p[0])), round(float(p[1]))
            assert tuple(img[y, x]) == col, (k, p)


def test_landmarks_follow_known_rotation() -> None:
    idn = identity_params(0, 5)
    marks = landmarks_local(idn, Expression())
    base = Pose(x=70.0, y=75.0, scale=0.9, roll=0.0, yaw=0.0, pitch=0.0)
    lm0 = _Projector(idn, base)(marks.pts, marks.z, marks.sil)
    theta = math.radians(20.0)
    lm1 = _Projector(idn, replace(base, roll=theta))(marks.pts, marks.z, marks.sil)
    c, s = math.cos(theta), math.sin(theta)
    centre = np.array([base.x, base.y])
    expected = (lm0 - centre) @ np.array([[c, s], [-s, c]]) + centre
    np.testing.assert_allclose(lm1, expected, atol=1e-9)
    # frontal: the local template geometry scaled into the frame
    np.testing.assert_allclose(lm0, marks.pts * 0.9 + centre, atol=1e-9)


def test_yaw_moves_nose_towards_turned_side() -> None:
    idn = identity_params(0, 9)
    marks = landmarks_local(idn, Expression())
    pose = Pose(x=70.0, y=75.0, scale=1.0, roll=0.0, yaw=0.0, pitch=0.0)
    lm0 = _Projector(idn, pose)(marks.pts, marks.z, marks.sil)
    lm1 = _Projector(idn, replace(pose, yaw=math.radians(30)))(marks.pts, marks.z, marks.sil)
    eye_mid_shift = (lm1[0, 0] + lm1[1, 0] - lm0[0, 0] - lm0[1, 0]) / 2
    assert lm1[2, 0] - lm0[2, 0] > eye_mid_shift > 0  # nose protrudes: moves further
    assert lm1[1, 0] - lm1[0, 0] < lm0[1, 0] - lm0[0, 0]  # eye distance foreshortened


# --------------------------------------------------------------------------- identity signal


def _aligned_features(spec: SynthFaceSpec) -> tuple[np.ndarray, np.ndarray, float]:
    """Template-aligned, downsampled grey pixels per image; labels; mean landmark residual."""
    feats, labels, residuals = [], [], []
    for k, _, img, lm in iter_images(spec):
        m = _similarity(lm, TEMPLATE_112)
        crop = cv2.warpAffine(img, m, (112, 112))
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(grey, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float64)
        feats.append(small.ravel())
        labels.append(k)
        warped = np.c_[lm, np.ones(5)] @ m.T
        residuals.append(np.linalg.norm(warped - TEMPLATE_112, axis=1).mean())
    return np.array(feats), np.array(labels), float(np.mean(residuals))


def _nn_accuracy(feats: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest neighbour (cosine on centred features) accuracy."""
    f = feats - feats.mean(1, keepdims=True)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


def test_identity_signal_survives_alignment_but_nuisance_matters() -> None:
    spec = SynthFaceSpec(num_identities=20, images_per_identity=6, seed=0)
    feats, labels, residual = _aligned_features(spec)
    acc = _nn_accuracy(feats, labels)
    chance = 1.0 / spec.num_identities
    print(f"aligned NN acc={acc:.3f} chance={chance:.3f} residual={residual:.2f}px")
    assert acc > 3 * chance
    assert acc < 0.9
    assert residual < 5.0  # landmark geometry is close to the ArcFace template


# --------------------------------------------------------------------------- contact sheet


def test_contact_sheet_tiles() -> None:
    items = list(iter_images(replace(SPEC, num_identities=2, images_per_identity=3)))
    imgs = [i[2] for i in items]
    sheet = contact_sheet(imgs, [i[3] for i in items], cols=4)
    assert sheet.shape == (2 * 144, 4 * 144, 3) and sheet.dtype == np.uint8
    assert np.array_equal(contact_sheet(imgs, None, cols=4)[:144, 144:288], imgs[1])


def test_a_release_made_in_two_processes_equals_one_made_in_order(tiny_synthface, tmp_path) -> None:
    """write_release makes the training split in a second process: every file is the same as
    when the split and then the evaluation sets are written one after the other."""
    import filecmp

    from arcflow.data.synthface_release import train_spec, write_release, write_train_split
    from arcflow.data.synthface_sets import identity_blocks, write_eval_sets

    params = tiny_synthface
    ordered, parallel = tmp_path / "ordered", tmp_path / "parallel"
    ordered.mkdir()
    split = identity_blocks(params)["train"]
    write_train_split(ordered / "train", train_spec(params), split, params.jpeg_quality, "train")
    assert len(dict(write_eval_sets(params, ordered))) == len(params.eval_sets)
    write_release(params, parallel)
    files = sorted(p.relative_to(ordered) for p in ordered.rglob("*") if p.is_file())
    made = sorted(p.relative_to(parallel) for p in parallel.rglob("*") if p.is_file())
    assert made == sorted([*files, type(files[0])("meta.json")])
    assert [f for f in files if not filecmp.cmp(ordered / f, parallel / f, shallow=False)] == []
