"""Video features: frame names -> videos, and the mean of normalised frame features."""

from __future__ import annotations

import numpy as np
import pytest

from arcflow.errors import DataFormatError
from arcflow.evaluate.videos import (
    EmptyGroupError,
    normalised_means,
    video_features,
    video_of,
)

pytestmark = pytest.mark.unit

SQRT10 = np.sqrt(10.0)


# ---------------------------------------------------------------------------- video_of


@pytest.mark.parametrize(
    ("name", "video"),
    [
        ("frame_images_DB/synth_00042/0/0.1.jpg", "synth_00042/0"),  # synthface write_ytf
        ("frame_images_DB/Aaron_Eckhart/2/2.1234.jpg", "Aaron_Eckhart/2"),
        ("aligned_images_DB/Aaron_Eckhart/2/aligned_detect_2.77.jpg", "Aaron_Eckhart/2"),
        ("IQIYI_VID_VAL_0000001.mp4/000012.jpg", "IQIYI_VID_VAL_0000001.mp4"),
        ("IQIYI_VID_TEST_0172835.mp4/7.JPG", "IQIYI_VID_TEST_0172835.mp4"),
    ],
)
def test_video_of_maps_frames_to_their_video(name: str, video: str) -> None:
    assert video_of(name) == video


@pytest.mark.parametrize(
    "name",
    [
        "frame_images_DB/Aaron_Eckhart/2/3.1.jpg",  # frame of another video
        "frame_images_DB/Aaron_Eckhart/2/2.x.jpg",  # frame number not digits
        "frame_images_DB//2/2.1.jpg",  # empty person
        "other_DB/Aaron_Eckhart/2/2.1.jpg",
        "IQIYI_VID_VAL_0000001.mp4/frame.jpg",
        "IQIYI_VID_VAL_0000001.mp4/1.png",
        "/1.jpg",
        "lonely.jpg",
        "a/b/c.jpg",
    ],
)
def test_video_of_rejects_other_names(name: str) -> None:
    with pytest.raises(DataFormatError, match="frame"):
        video_of(name)


# ---------------------------------------------------------------------- video_features


def test_known_means() -> None:
    # a: (3,4) -> (.6,.8) and (0,2) -> (0,1): mean (.3,.9) -> (1,3)/sqrt(10).  b: (-5,0) -> (-1,0)
    frames = np.array([[3.0, 4.0], [-5.0, 0.0], [0.0, 2.0]])
    videos, feats = video_features(frames, ["a", "b", "a"])
    assert videos == ["a", "b"]
    np.testing.assert_allclose(feats, [[1 / SQRT10, 3 / SQRT10], [-1.0, 0.0]], rtol=0, atol=1e-15)
    assert feats.dtype == np.float64


def test_frame_norms_do_not_weight_the_mean() -> None:
    # (1,0) and (0,100): the mean of the normalised frames is (.5,.5) -> (1,1)/sqrt(2)
    _, feats = video_features(np.array([[1.0, 0.0], [0.0, 100.0]], np.float32), ["v", "v"])
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats, [[np.sqrt(0.5), np.sqrt(0.5)]], rtol=1e-7)


def test_frames_in_any_order_and_videos_fixing_the_order() -> None:
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(60, 8))
    owner = [f"p/{i % 7}" for i in range(60)]
    names, feats = video_features(frames, owner)
    perm = rng.permutation(60)
    wanted = [f"p/{i}" for i in (6, 0, 3, 1, 5, 2, 4)]
    names2, feats2 = video_features(frames[perm], [owner[i] for i in perm], videos=wanted)
    assert names2 == wanted
    np.testing.assert_allclose(feats2, feats[[names.index(v) for v in wanted]], atol=1e-14)
    # a straightforward re-statement
    for video, feat in zip(names, feats, strict=True):
        rows = [f / np.linalg.norm(f) for f, o in zip(frames, owner, strict=True) if o == video]
        mean = np.mean(rows, axis=0)
        np.testing.assert_allclose(feat, mean / np.linalg.norm(mean), atol=1e-14)


def test_chunks_give_the_same_means(monkeypatch: pytest.MonkeyPatch) -> None:
    import arcflow.evaluate.videos as videos_mod

    rng = np.random.default_rng(1)
    frames, owner = rng.normal(size=(50, 4)), [str(i % 5) for i in range(50)]
    _, whole = video_features(frames, owner)
    monkeypatch.setattr(videos_mod, "_CHUNK", 7)
    _, chunked = video_features(frames, owner)
    np.testing.assert_allclose(chunked, whole, atol=1e-15)


def test_listed_video_without_frames_is_named() -> None:
    with pytest.raises(DataFormatError, match="'p/2' has no frame features"):
        video_features(np.ones((2, 3)), ["p/1", "p/1"], videos=["p/1", "p/2"])


def test_frame_of_an_unlisted_video_is_named() -> None:
    with pytest.raises(DataFormatError, match="'p/9'"):
        video_features(np.ones((2, 3)), ["p/1", "p/9"], videos=["p/1"])


@pytest.mark.parametrize(
    ("frames", "owner", "match"),
    [
        (np.ones((3, 2)), ["a", "b"], "3 frame features but 2"),
        (np.ones(3), ["a", "b", "c"], "shape"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "b"], "feature row 1 has a zero"),
        (np.array([[1.0, np.nan]]), ["a"], "feature row 0 .* non-finite"),
        (np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "a"], "mean of video 'a'"),
    ],
)
def test_bad_input(frames: np.ndarray, owner: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        video_features(frames, owner)


def test_duplicate_video_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        video_features(np.ones((1, 2)), ["a"], videos=["a", "a"])


def test_normalised_means_groups() -> None:
    feats = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0]])
    got = normalised_means(feats, np.array([1, 0, 1]), 2)
    np.testing.assert_allclose(got, [[0.0, 1.0], [np.sqrt(0.5), -np.sqrt(0.5)]], atol=1e-15)
    with pytest.raises(EmptyGroupError, match="group 2 has no rows") as info:
        normalised_means(feats, np.array([0, 0, 1]), 3)
    assert info.value.group == 2
    with pytest.raises(ValueError, match="out of range"):
        normalised_means(feats, np.array([0, 0, 3]), 2)
