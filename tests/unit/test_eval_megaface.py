"""MegaFace Challenge 1: hand-worked answers, a brute-force twin, the devkit file round trip."""

from __future__ import annotations

import itertools
import math
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from arcflow.data.protocols.megaface import (
    FeatureList,
    NoiseList,
    megaface_list_name,
    read_feature_list,
    read_noise_list,
    write_feature_list,
    write_noise_list,
)
from arcflow.evaluate import megaface
from arcflow.evaluate.megaface import (
    evaluate_megaface,
    list_indices,
    noise_mask,
    read_devkit_features,
    remove_probe_noise,
    write_devkit_features,
)
from arcflow.evaluate.result import rate_key
from tests.unit import eval_fixtures
from tests.unit.eval_fixtures import DEVICES, H, cell24, unit_rows

pytestmark = pytest.mark.unit

one_thread = eval_fixtures.one_thread
device = eval_fixtures.device

# unit vectors whose dot products are exact in float32 whatever the summation order
A1, A2 = [1, 0, 0, 0], [H, H, H, H]
B1 = B2 = [0, 1, 0, 0]
B3 = [0, 0, 1, 0]
D0, D1, D2 = [H, H, -H, -H], [0, 0, 0, 1], [0, 0, 1, 0]


def _hand_case() -> tuple[np.ndarray, list[str], np.ndarray, dict[int, np.ndarray]]:
    probes = np.array([A1, A2, B1, B2, B3], np.float32)
    distractors = np.array([D0, D1, D2], np.float32)
    # not nested: the size-10 list holds d1 only, the size-100 list d0 and d2
    return (
        probes,
        ["a", "a", "b", "b", "b"],
        distractors,
        {10: np.array([1]), 100: np.array([0, 2])},
    )


def test_hand_case_rank1_with_ties_and_tar_threshold_rule() -> None:
    probes, ids, distractors, lists = _hand_case()
    result = evaluate_megaface(probes, ids, distractors, lists, far=0.1, chunk=2, quiet=True)
    # Scores against (d0, d1, d2): a1 (.5, 0, 0), a2 (0, .5, .5), b1 = b2 (.5, 0, 0),
    # b3 (-.5, 0, 1). Mated: a1 . a2 = .5, b1 . b2 = 1, b1 . b3 = b2 . b3 = 0. 8 ordered pairs
    # (gallery i, probe j), a hit iff s(i, j) >= the probe's best distractor (a tie is a hit).
    # List 10 (d1); the probes' best: a1 0, a2 .5, b1 0, b2 0, b3 0.
    #   probe a1: .5 > 0 hit; probe a2: .5 = .5 tie, hit;
    #   probe b1 (b2): 1 > 0 hit, (b3): 0 = 0 tie, hit; probe b2 likewise: 2 hits;
    #   probe b3 (b1), (b2): 0 = 0 ties, 2 hits  -> 8 / 8 (3 / 8 if ties missed)
    # List 100 (d0, d2); the probes' best: a1 .5, a2 .5, b1 .5, b2 .5, b3 1.
    #   probes a1, a2: .5 = .5 ties, 2 hits; probe b1 (b2): 1 > .5 hit, (b3): 0 < .5 miss;
    #   probe b2 likewise: 1 hit; probe b3: 0 < 1 twice, misses -> 4 / 8 (2 / 8 if ties missed)
    assert result.metrics["rank1_10"] == 8 / 8
    assert result.metrics["rank1_100"] == 4 / 8
    assert result.metrics["rank1"] == 4 / 8
    # impostors (5 probes x d0, d2): 1, .5 x4, 0 x4, -.5; m = floor(0.1 * 10) = 1 -> t = 0.5;
    # genuine .5, 1, 0, 0 -> only 1 is above t
    assert result.metrics[rate_key("tar_far", 0.1)] == 1 / 4
    assert result.details["threshold"] == 0.5
    assert result.details["n_impostor"] == 10 and result.details["n_genuine"] == 4
    half = evaluate_megaface(probes, ids, distractors, lists, far=0.5, quiet=True)
    assert half.metrics["tar_far_5e-1"] == 2 / 4  # t = the 6th highest = 0


def test_float32_decision_alone_counts_a_tie_as_a_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand case's scores are exact in float32, so the first decision, without the exact
    re-check of near ties, already gives the answers above: both apply the same rule."""
    monkeypatch.setattr(megaface, "_resolve", lambda *args: None)
    probes, ids, distractors, lists = _hand_case()
    result = evaluate_megaface(probes, ids, distractors, lists, quiet=True)
    assert result.details["n_near_ties"] == 7  # 5 ties at list 10, 2 at list 100
    assert result.metrics["rank1_10"] == 8 / 8
    assert result.metrics["rank1_100"] == 4 / 8


def test_hand_case_refined() -> None:
    """d2 (noisy) no longer beats b3, and noisy b3 becomes b's centre (e2) + tiny noise."""
    probes, ids, distractors, lists = _hand_case()
    result = evaluate_megaface(
        probes,
        ids,
        distractors,
        lists,
        noisy_probes=np.array([4]),
        noisy_distractors=np.array([False, False, True]),
        far=0.1,
        quiet=True,
    )
    assert result.metrics["rank1_100"] == 4 / 8  # the original variant is unchanged
    # refined: d2 scores -inf and b3' = e2 + U(+-0.001) noise, so b3' . b1 = b3' . b2 ~ 1 - 1e-6,
    # d0 . b3' ~ .5, d1 . b3' ~ 0. List 100 (d0 only); the probes' best: a1 .5, a2 0, b1 .5,
    # b2 .5, b3' ~.5. Probe a1: .5 = .5 tie, hit; probe a2: .5 > 0; probes b1, b2: 1 and ~1 > .5;
    # probe b3': ~1 > ~.5 twice -> 8 / 8 (7 / 8 if a tie were a miss; 6 / 8 with b3 left as it
    # was: b1, b2 . b3 = 0 < .5). List 10 (d1): probe a2 ties .5 (a hit), every other pair's
    # mated score beats the probe's ~0 -> 8 / 8 (7 / 8 if a tie were a miss).
    assert result.metrics["refined_rank1_100"] == 8 / 8
    assert result.metrics["refined_rank1_10"] == 8 / 8
    assert result.metrics["refined_rank1"] == 8 / 8
    # impostors: d0 row (.5, 0, .5, .5, ~.5) and five -inf; t = 2nd highest = .5
    assert result.metrics["refined_tar_far_1e-1"] == 3 / 4
    assert result.details["n_noisy_probes"] == 1 and result.details["n_noisy_distractors"] == 1
    # m = 5: the 6th highest impostor is a noisy distractor's -inf, so every genuine pair passes
    half = evaluate_megaface(
        probes, ids, distractors, lists, noisy_distractors=np.array([2]), far=0.5, quiet=True
    )
    assert half.metrics["refined_tar_far_5e-1"] == 1.0
    assert half.details["refined_threshold"] == -math.inf


def test_remove_probe_noise_is_centre_plus_seeded_uniform() -> None:
    feats = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [H, H, 0], [0.6, 0.8, 0]], np.float32)
    ids = np.array([7, 7, 7, 3, 3])
    out = remove_probe_noise(feats, ids, np.array([False, True, False, True, False]), seed=5)
    noise = np.random.default_rng(5).uniform(-0.001, 0.001, (2, 3))
    expected = np.array([[1, 0, 1], [0.6, 0.8, 0]]) + noise  # centre = sum of the clean rows
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out[[1, 3]], expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out[[0, 2, 4]], feats[[0, 2, 4]])
    with pytest.raises(ValueError, match="no clean image"):
        remove_probe_noise(feats, ids, np.array([3, 4]))


def test_remove_probe_noise_adds_the_noise_to_the_sum_not_the_mean() -> None:
    """insightface ``remove_noises``: centre += feature over the clean images (a sum), then
    f = centre + U(-0.001, 0.001), f /= |f|. With 4 clean copies of e1 the centre is 4 e1, so
    f = (4 + u1, u2, u3) / |.|: the noise tilts f 4 times less than it would tilt the mean."""
    e1 = [1.0, 0.0, 0.0]
    feats = np.array([e1, e1, [0, 0.6, 0.8], e1, e1], np.float32)
    out = remove_probe_noise(feats, np.zeros(5, int), np.array([2]), seed=3)
    u = np.random.default_rng(3).uniform(-0.001, 0.001, 3)
    norm = math.sqrt((4 + u[0]) ** 2 + u[1] ** 2 + u[2] ** 2)
    expected = [(4 + u[0]) / norm, u[1] / norm, u[2] / norm]
    np.testing.assert_allclose(out[2], expected, rtol=0, atol=1e-7)
    on_mean = (np.array(e1) + u) / np.linalg.norm(np.array(e1) + u)
    assert np.abs(out[2] - on_mean).max() > 1e-4  # the mean's noise is 4x larger
    np.testing.assert_array_equal(np.delete(out, 2, axis=0), np.delete(feats, 2, axis=0))


# ------------------------------------------------------------------------- brute force


def _brute(probes, ids, distractors, lists, far, noisy_p=None, noisy_d=None, seed=0):
    """Every score materialised; loops over pairs as the protocol reads (float64 scores, exact
    on the lattice): a pair is a hit iff its mated score is >= the probe's best distractor."""
    ids = np.asarray(ids)
    variants = [("", probes, np.zeros(len(distractors), bool))]
    if noisy_p is not None:
        variants.append(("refined_", remove_probe_noise(probes, ids, noisy_p, seed=seed), noisy_d))
    out = {}
    largest = max(lists)
    for prefix, f, noisy in variants:
        f = f.astype(np.float64)
        scores = f @ distractors.astype(np.float64).T
        scores[:, noisy] = -np.inf
        for size, idx in lists.items():
            best = scores[:, idx].max(axis=1) if len(idx) else np.full(len(f), -np.inf)
            hits = [
                f[i] @ f[j] >= best[j]
                for i, j in itertools.permutations(range(len(f)), 2)
                if ids[i] == ids[j]
            ]
            out[f"{prefix}rank1_{size}"] = np.mean(hits)
        out[f"{prefix}rank1"] = out[f"{prefix}rank1_{largest}"]
        imp = np.sort(scores[:, lists[largest]].ravel())[::-1]
        m = math.floor(Fraction(repr(far)) * imp.size)
        t = imp[m] if m < imp.size else -np.inf
        gen = [f[i] @ f[j] for i, j in itertools.combinations(range(len(f)), 2) if ids[i] == ids[j]]
        out[f"{prefix}{rate_key('tar_far', far)}"] = np.mean(np.array(gen) > t)
    return out


def _random_case(seed: int, lattice: bool):
    """Probes of 6 identities, distractors, three non-nested lists (some rows in none).
    ``lattice``: every feature a vertex of the 24-cell (each identity's images on two of them,
    12 distractors among 30), so scores tie all the time, exactly."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 6, 24)
    if lattice:
        verts = cell24()
        own = rng.integers(0, 24, (6, 2))
        probes = verts[own[ids, rng.integers(0, 2, 24)]]
        distractors = verts[rng.integers(0, 24, 30)]
        sizes, pool = (2, 5, 9), 28
    else:
        centres = rng.standard_normal((6, 8))
        probes = unit_rows(centres[ids] + 0.8 * rng.standard_normal((24, 8)))
        distractors = unit_rows(rng.standard_normal((260, 8)))
        sizes, pool = (10, 100, 200), 250
    lists = {size: rng.choice(pool, size, replace=False) for size in sizes}
    return probes, ids, distractors, lists


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("lattice", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force(seed: int, lattice: bool, device: str) -> None:
    probes, ids, distractors, lists = _random_case(seed, lattice)
    rng = np.random.default_rng(seed + 10)
    noisy_p = rng.random(len(probes)) < 0.2
    noisy_p[[np.flatnonzero(ids == i)[0] for i in np.unique(ids)]] = False  # keep a clean one
    noisy_d = rng.random(len(distractors)) < 0.1
    for far in (1e-2, 0.1):
        got = evaluate_megaface(
            probes,
            ids,
            distractors,
            lists,
            noisy_probes=noisy_p,
            noisy_distractors=noisy_d,
            far=far,
            seed=3,
            chunk=17,
            device=device,
            quiet=True,
        )
        want = _brute(probes, ids, distractors, lists, far, noisy_p, noisy_d, seed=3)
        assert set(got.metrics) == set(want)
        for key, value in want.items():
            assert got.metrics[key] == pytest.approx(value, abs=1e-12), key


def test_roc_is_the_low_far_end() -> None:
    probes, ids, distractors, lists = _random_case(0, lattice=False)
    result = evaluate_megaface(probes, ids, distractors, lists, roc_fraction=0.05, quiet=True)
    fpr, tpr = result.roc
    n_imp = len(probes) * 200
    assert fpr[0] == 0 and 0.04 <= fpr[-1] <= 0.05 + 1 / n_imp
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_rejects_features_that_are_not_unit() -> None:
    probes, ids, distractors, lists = _hand_case()
    with pytest.raises(ValueError, match="distractor_feats row 1"):
        evaluate_megaface(probes, ids, distractors * [[1], [2], [1]], lists, quiet=True)
    with pytest.raises(ValueError, match="repeated"):
        evaluate_megaface(probes, ids, distractors, {10: np.array([1, 1])}, quiet=True)


# -------------------------------------------------------------------------- devkit files


def test_devkit_files_round_trip_and_give_the_same_metrics(tmp_path: Path) -> None:
    probes, ids, distractors, lists = _random_case(2, lattice=False)
    fs_paths = [f"Person {i}/Person_{i}_{n}.png" for n, i in enumerate(ids)]
    mf_paths = [f"{n % 7}/{n}@N00/{n}_1.jpg" for n in range(len(distractors))]
    ending = "_arcface_112x112.bin"
    write_devkit_features(tmp_path / "fs", fs_paths, probes, ending)
    write_devkit_features(tmp_path / "mf", mf_paths, distractors, ending)
    first = (tmp_path / "fs" / f"{fs_paths[0]}{ending}").read_bytes()
    assert struct.unpack("<4i", first[:16]) == (8, 1, 4, 5)
    templates = tmp_path / "templatelists"
    write_feature_list(
        templates / "facescrub_features_list.json",
        FeatureList(tuple(fs_paths), tuple(int(i) for i in ids)),
    )
    for size, idx in lists.items():
        chosen = FeatureList(tuple(mf_paths[i] for i in idx))
        write_feature_list(templates / megaface_list_name(size), chosen)
    write_noise_list(tmp_path / "fs_noise.txt", NoiseList.of([Path(fs_paths[3]).name], "fs"))
    write_noise_list(tmp_path / "mf_noise.txt", NoiseList.of([f"x\t{mf_paths[5]}"], "mf"))

    fs = read_feature_list(templates / "facescrub_features_list.json")
    got_probes = read_devkit_features(tmp_path / "fs", fs.paths, ending)
    got_dist = read_devkit_features(tmp_path / "mf", mf_paths, ending)
    np.testing.assert_array_equal(got_probes, probes)
    np.testing.assert_array_equal(got_dist, distractors)
    got_lists = list_indices(
        mf_paths, {s: read_feature_list(templates / megaface_list_name(s)).paths for s in lists}
    )
    noisy_p = noise_mask(fs.paths, read_noise_list(tmp_path / "fs_noise.txt"))
    noisy_d = noise_mask(mf_paths, read_noise_list(tmp_path / "mf_noise.txt"))
    assert np.flatnonzero(noisy_p).tolist() == [3] and np.flatnonzero(noisy_d).tolist() == [5]

    kwargs = {"far": 0.01, "quiet": True}
    from_files = evaluate_megaface(
        got_probes,
        fs.ids,
        got_dist,
        got_lists,
        noisy_probes=noisy_p,
        noisy_distractors=noisy_d,
        **kwargs,
    )
    direct = evaluate_megaface(
        probes, ids, distractors, lists, noisy_probes=[3], noisy_distractors=[5], **kwargs
    )
    assert dict(from_files.metrics) == dict(direct.metrics)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_a_distractor_that_duplicates_the_gallery_image_ties(chunk: int) -> None:
    """512-d float features; identity k's images are rows 2k and 2k + 1, and distractor 20 + k
    is a copy of row 2k. Gallery 2k, probe 2k + 1: the copy scores exactly s(2k, 2k + 1) (float32
    matmuls may round the two apart; the exact re-check makes them equal), a tie, so a hit.
    Gallery 2k + 1, probe 2k: the copy is of the probe and scores ~1 > s(2k + 1, 2k) ~ .5, a
    miss. So 16 hits of 32 ordered pairs with the copies in the list (0 if a tie were a miss)."""
    rng = np.random.default_rng(chunk)
    ids = np.repeat(np.arange(16), 2)
    probes = unit_rows(rng.standard_normal((16, 512))[ids] + rng.standard_normal((32, 512)))
    others = unit_rows(rng.standard_normal((20, 512)))
    distractors = np.concatenate([others, probes[::2]])  # rows 20..35: each identity's first
    lists = {10: np.arange(10), 36: np.arange(36)}
    result = evaluate_megaface(probes, ids, distractors, lists, chunk=chunk, quiet=True)
    assert result.metrics["rank1_10"] == 1.0  # random distractors never win
    assert result.metrics["rank1_36"] == 16 / 32
    assert result.details["n_near_ties"] >= 16  # the 16 ties went through the exact re-check
