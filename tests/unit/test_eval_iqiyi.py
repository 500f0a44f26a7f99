"""iQIYI-VID retrieval: AP/MAP known answers, centres, ranking, official files, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import arcflow.evaluate.iqiyi as iq
from arcflow.data.protocols.iqiyi import (
    read_submission,
    read_train_gt,
    read_val_gt,
    write_submission,
    write_train_gt,
    write_val_gt,
)
from arcflow.errors import DataFormatError
from arcflow.evaluate.iqiyi import (
    average_precision,
    evaluate_iqiyi,
    identity_centres,
    mean_average_precision,
    rank_videos,
)
from arcflow.evaluate.videos import video_features, video_of

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- AP / MAP


@pytest.mark.parametrize(
    ("ranked", "relevant", "expected"),
    [
        (["a", "x", "b"], ["a", "b"], (1 + 2 / 3) / 2),  # hits at ranks 1 and 3 of 2
        (["x", "a", "y", "b"], ["a", "b", "c"], (1 / 2 + 2 / 4) / 3),  # c never retrieved
        (["a", "b"], ["b", "a"], 1.0),
        (["x", "y"], ["a"], 0.0),
        ([], ["a"], 0.0),
    ],
)
def test_average_precision(ranked: list[str], relevant: list[str], expected: float) -> None:
    assert average_precision(ranked, relevant) == pytest.approx(expected, abs=1e-15)


def test_average_precision_cuts_at_top() -> None:
    ranked = [f"x{i}" for i in range(100)] + ["a"]
    assert average_precision(ranked, ["a"]) == 0.0
    assert average_precision(["x", "a", "b"], ["a", "b"], top=2) == pytest.approx(1 / 4)


def test_average_precision_rejects_bad_lists() -> None:
    with pytest.raises(ValueError, match="twice"):
        average_precision(["a", "a"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        average_precision(["a"], [])


def test_map_over_queries_only() -> None:
    gt = {0: ("u1", "u2"), 3: ("a", "b"), 5: ("c",), 7: ("d", "e")}
    ranking = {3: ("a", "x", "b"), 5: ("y", "c"), 9: ("d",)}  # 7 missing, 9 not a query
    # APs: 3 -> 5/6, 5 -> 1/2, 7 -> 0 (no list)
    assert mean_average_precision(ranking, gt) == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    with pytest.raises(ValueError, match="no query"):
        mean_average_precision(ranking, {0: ("u1",)})


# ------------------------------------------------------------------ centres and ranking


def test_identity_centres() -> None:
    train_gt = {"t1": 1, "t2": 1, "t3": 2, "t0": 0}
    videos = ["t3", "t1", "t2", "t0"]
    feats = np.array([[0.0, -2.0], [3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    centres = identity_centres(train_gt, videos, feats, [2, 1])
    assert list(centres) == [2, 1]
    # label 1: mean of (1,0), (0,1) -> (1,1)/sqrt 2; label 2: (0,-1)
    np.testing.assert_allclose(centres[1], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-15)
    np.testing.assert_allclose(centres[2], [0.0, -1.0], atol=1e-15)


def test_rank_videos_by_cosine_with_ties_in_gallery_order() -> None:
    centres = {1: np.array([1.0, 0.0]), 2: np.array([0.0, 5.0])}
    names = ["v0", "v1", "v2", "v3", "v4"]
    # v3 = 2 * v2 and v4 mirrors v2: exact ties after normalisation
    feats = np.array([[0.6, 0.8], [0.8, -0.6], [0.96, 0.28], [1.92, 0.56], [-0.96, 0.28]])
    got = rank_videos(centres, names, feats, top=4)
    assert got[1] == ("v2", "v3", "v1", "v0")  # .96 (tie, gallery order), .8, .6; v4 cut
    assert got[2] == ("v0", "v2", "v3", "v4")  # .8, then a three-way tie at .28; v1 cut
    assert rank_videos(centres, names, feats, top=10)[1][-1] == "v4"
    assert rank_videos({}, names, feats) == {}


def test_rank_videos_equals_a_full_sort_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 8)).astype(np.float32)
    gallery[7] = gallery[3]  # an exact tie
    names = [f"g{i}" for i in range(300)]
    centres = {label: rng.normal(size=8) for label in range(1, 41)}
    monkeypatch.setattr(iq, "BLOCK_ELEMENTS", 300 * 7)  # blocks of 7 queries
    got = rank_videos(centres, names, gallery, top=25)
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    for label, centre in centres.items():
        scores = unit @ (centre / np.linalg.norm(centre)).astype(np.float32)
        want = sorted(range(300), key=lambda i, s=scores: (-s[i], i))[:25]
        assert got[label] == tuple(names[i] for i in want)


def test_rank_videos_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="zero or non-finite"):
        rank_videos({1: np.ones(2)}, ["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="video_feats must be"):
        rank_videos({1: np.ones(2)}, ["a"], np.ones((2, 2)))
    with pytest.raises(ValueError, match="3-d but videos 2-d"):
        rank_videos({1: np.ones(3)}, ["a"], np.ones((1, 2)))
    with pytest.raises(ValueError, match="top"):
        rank_videos({1: np.ones(2)}, ["a"], np.ones((1, 2)), top=0)


# --------------------------------------------------------------------- end to end


def _hand_set() -> tuple[dict[str, int], list[str], np.ndarray, dict, list[str], np.ndarray]:
    """Identity 1 along x, identity 2 along y; a distractor (label 0) close to identity 1."""
    train_gt = {"T1a": 1, "T1b": 1, "T2a": 2, "T0": 0}
    train_videos = ["T1a", "T1b", "T2a", "T0"]
    # centre 1: mean of (.8, .6), (.8, -.6) -> (1, 0); centre 2: (0, 1)
    train_feats = np.array([[0.8, 0.6], [0.8, -0.6], [0.0, 3.0], [0.6, 0.8]])
    eval_gt = {1: ("E1a", "E1b"), 2: ("E2a",), 0: ("U",)}
    eval_videos = ["E1a", "E1b", "E2a", "U"]
    # cosine to centre 1: E1a .96, E1b .6, E2a -.6, U .99 -> U, E1a, E1b, E2a
    # cosine to centre 2: E1b .8, E2a .8 (tie: gallery order), E1a .28, U ~.14
    eval_feats = np.array([[0.96, 0.28], [0.6, 0.8], [-0.6, 0.8], [0.99, np.sqrt(1 - 0.99**2)]])
    return train_gt, train_videos, train_feats, eval_gt, eval_videos, eval_feats


def test_hand_built_evaluation() -> None:
    result = evaluate_iqiyi(*_hand_set())
    # label 1: U, E1a, E1b, E2a -> hits at 2 and 3: (1/2 + 2/3) / 2 = 7/12
    # label 2: E1b, E2a, ... -> hit at 2: 1/2
    assert result.metrics == {"map_at_100": pytest.approx((7 / 12 + 1 / 2) / 2, abs=1e-15)}
    assert result.roc is None
    assert result.details["queries"] == 2 and result.details["gt_videos"] == 3
    assert result.details["gt_videos_without_features"] == 0
    assert result.details["train_videos"] == 3
    assert evaluate_iqiyi(*_hand_set(), top=1).metrics == {"map_at_1": pytest.approx(0.0)}


def test_ground_truth_without_features_still_counts() -> None:
    train_gt, tv, tf, eval_gt, ev, ef = _hand_set()
    result = evaluate_iqiyi(train_gt, tv, tf, eval_gt, ev[1:], ef[1:])  # E1a not embedded
    # label 1: U, E1b, E2a -> hit at 2 of 2 gt: (1/2) / 2; label 2 as before: 1/2
    assert result.metrics["map_at_100"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert result.details["gt_videos_without_features"] == 1


def test_official_files_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ids, dim = 12, 16
    centres = rng.normal(size=(ids + 1, dim))
    train_gt = {f"IQIYI_VID_TRAIN_{i:07d}.mp4": 1 + i % ids for i in range(3 * ids)}
    val_gt: dict[int, list[str]] = {label: [] for label in [*range(1, ids + 1), 0]}
    for i in range(6 * ids):
        val_gt[i % (ids + 1)].append(f"IQIYI_VID_VAL_{i:07d}.mp4")
    # frames named '<video>/<frame>.jpg', shuffled, noisy around the identity centre
    frame_names, frames = [], []
    for video, label in [*train_gt.items(), *((v, k) for k, vs in val_gt.items() for v in vs)]:
        for f in range(3):
            frame_names.append(f"{video}/{f:06d}.jpg")
            frames.append(centres[label] + 1.5 * rng.normal(size=dim))
    perm = rng.permutation(len(frames))
    names, feats = video_features(np.array(frames)[perm], [video_of(frame_names[i]) for i in perm])
    row = {name: i for i, name in enumerate(names)}
    write_train_gt(tmp_path / "train_v2.txt", train_gt)
    write_val_gt(tmp_path / "val_v2.txt", val_gt)
    train_back, val_back = (
        read_train_gt(tmp_path / "train_v2.txt"),
        read_val_gt(tmp_path / "val_v2.txt"),
    )
    assert train_back == train_gt and val_back == {k: tuple(v) for k, v in val_gt.items()}
    tv = list(train_back)
    ev = [v for vs in val_back.values() for v in vs]
    tf, ef = feats[[row[v] for v in tv]], feats[[row[v] for v in ev]]
    result = evaluate_iqiyi(train_back, tv, tf, val_back, ev, ef)
    score = result.metrics["map_at_100"]
    assert 0.3 < score < 1.0
    # the same ranking written as a submission and scored from the file
    ranking = rank_videos(identity_centres(train_back, tv, tf, range(1, ids + 1)), ev, ef)
    write_submission(tmp_path / "submission.txt", ranking)
    submitted = read_submission(tmp_path / "submission.txt")
    assert mean_average_precision(submitted, val_back) == pytest.approx(score, abs=1e-15)
    # a submission missing a query scores it 0
    del submitted[1]
    ap1 = average_precision(ranking[1], val_back[1])
    assert mean_average_precision(submitted, val_back) == pytest.approx(score - ap1 / ids)


# ----------------------------------------------------------------------------- errors


def test_training_video_without_features_is_named() -> None:
    train_gt, tv, tf, eval_gt, ev, ef = _hand_set()
    with pytest.raises(DataFormatError, match="training video T1b \\(label 1\\)"):
        evaluate_iqiyi(train_gt, tv[:1] + tv[2:], np.delete(tf, 1, axis=0), eval_gt, ev, ef)


def test_query_without_training_video_is_named() -> None:
    train_gt, tv, tf, eval_gt, ev, ef = _hand_set()
    with pytest.raises(DataFormatError, match="label 7 has no training video"):
        evaluate_iqiyi(train_gt, tv, tf, {**eval_gt, 7: ("E7",)}, ev, ef)


def test_ground_truth_without_queries() -> None:
    train_gt, tv, tf, _, ev, ef = _hand_set()
    with pytest.raises(DataFormatError, match="no query"):
        evaluate_iqiyi(train_gt, tv, tf, {0: ("U",)}, ev, ef)


def test_centre_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="feats must be"):
        identity_centres({"a": 1}, ["a", "b"], np.ones((1, 2)), [1])
