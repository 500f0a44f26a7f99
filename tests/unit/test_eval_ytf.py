"""YTF video-pair verification: hand-derived folds, a loop re-statement, files, errors."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from arcflow.data.protocols.ytf import VideoPair, YTFSplits, read_splits, write_splits
from arcflow.errors import DataFormatError
from arcflow.evaluate.scores import eer
from arcflow.evaluate.videos import video_features, video_of
from arcflow.evaluate.ytf import evaluate_ytf, split_folds

pytestmark = pytest.mark.unit

# (split, squared distance, same). Deliberately not grouped by split in file order, so
# contiguous folds would give other numbers. Distances are squares of exact binary values.
HAND = [
    (2, 0.0625, True),
    (1, 0.25, True),
    (3, 0.25, True),
    (1, 1.5625, True),
    (2, 0.5625, True),
    (3, 2.25, True),
    (1, 2.25, False),
    (2, 1.5625, False),
    (3, 1.0, False),
    (1, 0.5625, False),
    (2, 2.25, False),
    (3, 0.0625, False),
]


def _hand_case() -> tuple[list[str], np.ndarray, YTFSplits]:
    """Each pair i: video ``p<i>/0`` at the origin, ``q<i>/0`` at (sqrt(d_i), 0)."""
    videos, feats, pairs = [], [], []
    for i, (split, dist, same) in enumerate(HAND):
        videos += [f"p{i}/0", f"q{i}/0"]
        feats += [[0.0, 0.0], [np.sqrt(dist), 0.0]]
        pairs.append(VideoPair(split, i + 1, f"p{i}/0", f"q{i}/0", same))
    return videos, np.array(feats), YTFSplits(tuple(pairs))


def test_hand_built_splits() -> None:
    # Accuracy, "same" iff d < t, thresholds chosen on the two other splits:
    # fold 1 trains on same {.0625,.5625,.25,2.25}, diff {1.5625,2.25,1,.0625}: best 6/8 for
    #   t in (.5625, 1] -> t = .57; tests same .25 ok, 1.5625 no; diff 2.25 ok, .5625 no: 2/4.
    # fold 2 trains on same {.25,1.5625,.25,2.25}, diff {2.25,.5625,1,.0625}: best 5/8 for
    #   t in (.25, .5625] -> .26; tests same .0625 ok, .5625 no; diff 1.5625, 2.25 ok: 3/4.
    # fold 3 trains on same {.25,1.5625,.0625,.5625}, diff {2.25,.5625,1.5625,2.25}: 6/8 first
    #   for t in (.25, .5625] -> .26; tests same .25 ok, 2.25 no; diff 1 ok, .0625 no: 2/4.
    # VAL@1e-3: the threshold lies just above the largest zero-FAR grid point below the
    #   smallest training impostor (.0625, .0625, .5625): folds 1-2 accept no test pair
    #   (VAL 0, FAR 0); fold 3 (t ~ .562) accepts same .25 and diff .0625: VAL .5, FAR .5.
    result = evaluate_ytf(*_hand_case())
    m = result.metrics
    assert m["accuracy"] == pytest.approx(7 / 12, abs=1e-15)
    assert m["accuracy_std"] == pytest.approx(np.sqrt(1 / 72), abs=1e-15)
    assert m["val"] == pytest.approx(1 / 6, abs=1e-15)
    assert m["val_std"] == pytest.approx(np.sqrt(1 / 18), abs=1e-15)
    assert m["far"] == pytest.approx(1 / 6, abs=1e-15)
    # ROC: (0,0) (1,1) (1,3) (2,4) (3,4) (4,5) (6,6) in sixths -> trapezoids 23.5 / 36
    assert m["auc"] == pytest.approx(47 / 72, abs=1e-15)
    # 1 - tpr meets fpr at the ROC point (1/3, 2/3)
    assert m["eer"] == pytest.approx(1 / 3, abs=1e-12)
    fpr, tpr = result.roc
    np.testing.assert_allclose(fpr * 6, [0, 1, 1, 2, 3, 4, 6], atol=1e-12)
    np.testing.assert_allclose(tpr * 6, [0, 1, 3, 4, 4, 5, 6], atol=1e-12)
    assert result.details["pairs"] == 12 and result.details["splits"] == 3
    assert set(m) == {"accuracy", "accuracy_std", "val", "val_std", "far", "auc", "eer"}


def test_split_folds_follow_split_numbers() -> None:
    folds = split_folds(np.array([2, 1, 2, 3, 1]))
    assert [test.tolist() for _, test in folds] == [[1, 4], [0, 2], [3]]
    assert [train.tolist() for train, _ in folds] == [[0, 2, 3], [1, 3, 4], [0, 1, 2, 4]]
    (train, test), *rest = split_folds(np.array([4, 4, 4]))
    assert not rest and train.tolist() == test.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("fpr", "tpr", "expected"),
    [
        ([0, 0.25, 0.5, 1], [0, 0.5, 0.75, 1], 0.375),  # crossing inside a segment
        ([0, 0.5, 1], [0, 0.5, 1], 0.5),  # crossing on a point
        ([0, 0.25, 0.25, 1], [0, 0.25, 1, 1], 0.25),  # on a vertical step
        ([0, 0, 1], [0, 1, 1], 0.0),  # perfect separation
    ],
)
def test_eer(fpr: list[float], tpr: list[float], expected: float) -> None:
    assert eer(np.array(fpr), np.array(tpr)) == expected


def _naive(videos: list[str], feats: np.ndarray, splits: YTFSplits) -> dict[str, float]:
    """The protocol written out with loops over pairs, folds and thresholds."""
    row = {v: i for i, v in enumerate(videos)}
    dist, same, split = [], [], []
    for p in splits.pairs:
        a, b = feats[row[p.video1]], feats[row[p.video2]]
        dist.append(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))
        same.append(p.same)
        split.append(p.split)
    accs, vals, fars = [], [], []
    for k in sorted(set(split)):
        train = [i for i in range(len(dist)) if split[i] != k]
        test = [i for i in range(len(dist)) if split[i] == k]
        best_t, best_correct = None, -1
        for t in np.arange(0, 4, 0.01):
            correct = sum((dist[i] < t) == same[i] for i in train)
            if correct > best_correct:
                best_t, best_correct = t, correct
        accs.append(sum((dist[i] < best_t) == same[i] for i in test) / len(test))
        grid = np.arange(0, 4, 0.001)
        diff_train = [dist[i] for i in train if not same[i]]
        far = [sum(d < t for d in diff_train) / len(diff_train) for t in grid]
        thr = _naive_threshold(far, grid, 1e-3)
        same_test = [i for i in test if same[i]]
        diff_test = [i for i in test if not same[i]]
        vals.append(sum(dist[i] < thr for i in same_test) / len(same_test))
        fars.append(sum(dist[i] < thr for i in diff_test) / len(diff_test))
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "val": float(np.mean(vals)),
        "val_std": float(np.std(vals)),
        "far": float(np.mean(fars)),
        **_naive_auc_eer(dist, same),
    }


def _naive_threshold(far: list[float], grid: np.ndarray, target: float) -> float:
    """verification.threshold_at_far's rule, one grid point at a time."""
    if max(far) < target:
        return 0.0
    if far[0] > target:
        return float(grid[0])
    for i in range(len(grid)):
        if far[i] == target and (i + 1 == len(grid) or far[i + 1] > target):
            return float(grid[i])  # the largest threshold of the level equal to the target
        if far[i] < target < far[i + 1]:
            return float(
                grid[i] + (target - far[i]) * (grid[i + 1] - grid[i]) / (far[i + 1] - far[i])
            )
    raise AssertionError("unreachable")


def _naive_auc_eer(dist: list[float], same: list[bool]) -> dict[str, float]:
    n_same, n_diff = sum(same), len(same) - sum(same)
    points = [(0.0, 0.0)]
    for t in sorted(set(dist)):
        tp = sum(d <= t and s for d, s in zip(dist, same, strict=True))
        fp = sum(d <= t and not s for d, s in zip(dist, same, strict=True))
        points.append((fp / n_diff, tp / n_same))
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        g0, g1 = 1 - y0 - x0, 1 - y1 - x1
        if g1 <= 0 < g0:
            return {"auc": area, "eer": x1 if g1 == 0 else x0 + g0 / (g0 - g1) * (x1 - x0)}
    raise AssertionError("no crossing")


def _random_case(seed: int) -> tuple[list[str], np.ndarray, YTFSplits]:
    rng = np.random.default_rng(seed)
    people, per_person, dim = 30, 3, 16
    centres = rng.normal(size=(people, dim))
    videos = [f"person_{p}/{v}" for p in range(people) for v in range(per_person)]
    feats = np.repeat(centres, per_person, axis=0) + 1.2 * rng.normal(size=(len(videos), dim))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    pairs = []
    for split in range(1, 11):
        for n in range(20):
            p = int(rng.integers(people))
            if n < 10:
                a, b = rng.choice(per_person, 2, replace=False)
                v1, v2 = f"person_{p}/{a}", f"person_{p}/{b}"
            else:
                q = int((p + rng.integers(1, people)) % people)
                v1 = f"person_{p}/{rng.integers(per_person)}"
                v2 = f"person_{q}/{rng.integers(per_person)}"
            pairs.append(VideoPair(split, n + 1, v1, v2, n < 10))
    order = rng.permutation(len(pairs))  # file order mixes the splits
    return videos, feats, YTFSplits(tuple(pairs[i] for i in order))


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_loop_restatement(seed: int) -> None:
    videos, feats, splits = _random_case(seed)
    got = evaluate_ytf(videos, feats, splits).metrics
    want = _naive(videos, feats, splits)
    assert 0.6 < got["accuracy"] < 1.0  # a case where thresholds matter
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


# ----------------------------------------------------------------------- files & frames


def test_from_frames_and_splits_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    videos, feats, splits = _random_case(5)
    # three noisy frames per video, named as the aligned YTF release names them
    names, frames = [], []
    for video, feat in zip(videos, feats, strict=True):
        person, vid = video.split("/")
        for f in range(3):
            names.append(f"aligned_images_DB/{person}/{vid}/aligned_detect_{vid}.{f + 1}.jpg")
            frames.append(feat + 0.3 * rng.normal(size=feat.shape))
    perm = rng.permutation(len(names))
    frame_names = [names[i] for i in perm]
    video_names, video_feats = video_features(
        np.array(frames)[perm], [video_of(n) for n in frame_names]
    )
    write_splits(tmp_path / "splits.txt", splits)
    back = read_splits(tmp_path / "splits.txt")
    assert back == splits
    got = evaluate_ytf(video_names, video_feats, back).metrics
    want = _naive(video_names, video_feats, back)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


# ------------------------------------------------------------------------------ errors


def test_missing_video_is_named_with_its_line(tmp_path: Path) -> None:
    videos, feats, splits = _hand_case()
    write_splits(tmp_path / "splits.txt", splits)
    back = read_splits(tmp_path / "splits.txt")
    with pytest.raises(DataFormatError, match=r"line 5 \(split 1, pair 4\): video 'q3/0'"):
        evaluate_ytf(videos[:7], feats[:7], back)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda v, f, s: (v, f[:-1], s), ValueError, "feats must be"),
        (lambda v, f, s: (v, f, YTFSplits(())), DataFormatError, "no pairs"),
        (
            lambda v, f, s: (v, f, YTFSplits(tuple(p for p in s.pairs if p.same))),
            DataFormatError,
            "both same and different",
        ),
        (lambda v, f, s: ([*v[:-1], v[0]], f, s), ValueError, "twice"),
        (lambda v, f, s: (v, np.where(f == 0, np.nan, f), s), ValueError, "NaN"),
    ],
)
def test_bad_input(change: Callable[..., tuple], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        evaluate_ytf(*change(*_hand_case()))


def test_bad_far_target() -> None:
    with pytest.raises(ValueError, match="far_target"):
        evaluate_ytf(*_hand_case(), far_target=2.0)
