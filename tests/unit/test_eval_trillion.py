"""Trillion-Pairs: a hand-worked case, a brute-force twin, the merged file and file list."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from arcflow.data.protocols import trillion as protocol
from arcflow.errors import DataFormatError
from arcflow.evaluate.result import rate_key
from arcflow.evaluate.trillion import evaluate_trillion, folder_labels, split_merged, split_rows
from tests.unit import eval_fixtures
from tests.unit.eval_fixtures import DEVICES, H, cell24, unit_rows

pytestmark = pytest.mark.unit

one_thread = eval_fixtures.one_thread
device = eval_fixtures.device

E = np.eye(4, dtype=np.float32)


def _hand_case() -> tuple[np.ndarray, list[str], np.ndarray]:
    probes = np.array(
        [E[0], [H] * 4, E[1], E[1], E[2], -E[0], [-H] * 4], np.float32
    )  # a a b b c d d
    distractors = np.array([[H, H, -H, -H], E[3]], np.float32)
    return probes, list("aabbcdd"), distractors


@pytest.mark.parametrize("max_buffer", [0, 1 << 20])
def test_hand_case(max_buffer: int) -> None:
    """32 impostors: 0.5 x7, 0 x15, the rest negative; genuine a .5, b 1, d .5.
    Best impostor of a1, a2: .5 (tie with their mate: a miss), of b: .5, of d: 0."""
    probes, ids, distractors = _hand_case()
    kw = {"max_buffer": max_buffer, "chunk": 1, "block": 2, "quiet": True}
    strict = evaluate_trillion(probes, ids, distractors, ver_fpr=0.03, id_fpr=0.03, **kw)
    # m = floor(0.96) = 0: t = .5 for both; only b's genuine pair is above it
    assert strict.metrics["ver_tpr_fpr_3e-2"] == 1 / 3
    assert strict.metrics["id_tpr_fpr_3e-2"] == 2 / 6  # b1, b2; c (no mate) is no search
    loose = evaluate_trillion(probes, ids, distractors, ver_fpr=0.25, id_fpr=0.25, **kw)
    # m = 8: t = the 9th highest = 0; d's searches now count, a's still tie
    assert loose.metrics["ver_tpr_fpr_2.5e-1"] == 1.0
    assert loose.metrics["id_tpr_fpr_2.5e-1"] == 4 / 6
    assert loose.details["n_impostor"] == 32 and loose.details["n_genuine"] == 3
    assert loose.details["id_threshold"] == 0.0 and loose.details["passes"] == (
        2 if max_buffer == 0 else 1
    )


def _brute(probes, ids, distractors, ver_fpr, id_fpr):
    """Every pair materialised, the definition read literally."""
    ids = np.asarray(ids)
    p, g = probes.astype(np.float64), distractors.astype(np.float64)
    pg, pp = p @ g.T, p @ p.T
    pairs = list(itertools.combinations(range(len(p)), 2))
    imp = np.concatenate([pg.ravel(), [pp[i, j] for i, j in pairs if ids[i] != ids[j]]])
    gen = np.array([pp[i, j] for i, j in pairs if ids[i] == ids[j]])
    desc = np.sort(imp)[::-1]

    def threshold(rate: float) -> float:
        m = math.floor(Fraction(repr(rate)) * imp.size)
        return desc[m] if m < imp.size else -np.inf

    t_id, hits, searches = threshold(id_fpr), 0, 0
    for a in range(len(p)):
        mates = [pp[a, b] for b in range(len(p)) if b != a and ids[b] == ids[a]]
        if not mates:
            continue
        others = [pp[a, b] for b in range(len(p)) if ids[b] != ids[a]] + list(pg[a])
        searches += 1
        hits += max(mates) > max(others) and max(mates) > t_id
    return {
        rate_key("ver_tpr_fpr", ver_fpr): np.mean(gen > threshold(ver_fpr)),
        rate_key("id_tpr_fpr", id_fpr): hits / searches,
    }


def _random_case(seed: int, lattice: bool):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 9, 50)
    if lattice:  # 24-cell vertices: exact scores, many ties
        verts = cell24()
        own = rng.integers(0, 24, (9, 2))
        return verts[own[ids, rng.integers(0, 2, 50)]], ids, verts[rng.integers(0, 24, 12)]
    centres = rng.standard_normal((9, 8))
    probes = centres[ids] + 0.7 * rng.standard_normal((50, 8))
    distractors = rng.standard_normal((300, 8))
    return unit_rows(probes), ids, unit_rows(distractors)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("lattice", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force(seed: int, lattice: bool, device: str) -> None:
    probes, ids, distractors = _random_case(seed, lattice)
    ver_fpr, id_fpr = (0.1, 0.1) if lattice else (1e-3, 1e-2)
    want = _brute(probes, ids, distractors, ver_fpr, id_fpr)
    configs = [(7, 40, 0, 1e-6), (16, 16 * 5, 50, 1e-6), (4096, 1 << 20, 1 << 20, 0.5)]
    for chunk, block, max_buffer, roc_fraction in configs:  # 0.5: the top-k is fed every score
        got = evaluate_trillion(
            probes,
            ids,
            distractors,
            ver_fpr=ver_fpr,
            id_fpr=id_fpr,
            chunk=chunk,
            block=block,
            max_buffer=max_buffer,
            roc_fraction=roc_fraction,
            device=device,
            quiet=True,
        )
        assert dict(got.metrics) == pytest.approx(want, abs=1e-12)
        fpr, tpr = got.roc
        assert fpr[0] == 0 and np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_merged_file_and_file_list_round_trip(tmp_path: Path) -> None:
    probes, ids, distractors = _random_case(3, lattice=False)
    probe_names = [f"lfw/Person_{i}/{n:04d}.jpg" for n, i in enumerate(ids)]
    dist_names = [f"flickr/{n // 100}/{n}.jpg" for n in range(len(distractors))]
    # the file list interleaves both sets: neither comes back as one run of rows
    names = [*dist_names[:100], *probe_names[::2], *dist_names[100:], *probe_names[1::2]]
    rows = dict(zip(dist_names, distractors, strict=True))
    rows.update(zip(probe_names, probes, strict=True))
    protocol.write_file_list(tmp_path / protocol.FILE_LIST, names)
    protocol.write_features(tmp_path / "features.bin", np.stack([rows[n] for n in names]))

    got_names = protocol.read_file_list(tmp_path / protocol.FILE_LIST)
    merged = protocol.read_features(tmp_path / "features.bin", rows=len(got_names))
    got_probes, got_dist = split_merged(merged, got_names, probe_names)
    np.testing.assert_array_equal(got_probes, probes)
    np.testing.assert_array_equal(np.sort(got_dist, axis=0), np.sort(distractors, axis=0))
    labels = folder_labels(probe_names)
    assert labels[0] == f"lfw/Person_{ids[0]}"
    kw = {"ver_fpr": 1e-3, "id_fpr": 1e-2, "quiet": True}
    from_file = evaluate_trillion(got_probes, labels, got_dist, **kw)
    direct = evaluate_trillion(probes, ids, distractors, **kw)
    assert dict(from_file.metrics) == dict(direct.metrics)


def test_split_rows_takes_a_run_without_copying(tmp_path: Path) -> None:
    names = ["p/a/1.jpg", "p/a/2.jpg", "g/1.jpg", "g/2.jpg", "g/3.jpg"]
    feats = np.arange(10, dtype=np.float32).reshape(5, 2)
    probe_rows, rest = split_rows(names, ["p/a/2.jpg", "p/a/1.jpg"])
    assert probe_rows.tolist() == [1, 0] and rest.tolist() == [2, 3, 4]
    _, dist = split_merged(feats, names, ["p/a/1.jpg", "p/a/2.jpg"])
    assert np.shares_memory(dist, feats)
    with pytest.raises(DataFormatError, match="not in the file list"):
        split_rows(names, ["p/b/1.jpg"])
