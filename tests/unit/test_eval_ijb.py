"""IJB evaluation: pooling, pair scores, 1:1 and 1:N metrics against hand-worked answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics  # the reference (installed with mlflow)

from arcflow.data.protocols import ijb as protocol
from arcflow.data.protocols.ijb import FaceTidMid, FivePoints, TemplatePairs, TemplateTable
from arcflow.errors import DataFormatError
from arcflow.evaluate.ijb import (
    evaluate_ijb,
    identify_1n,
    identify_1n_galleries,
    score_template_pairs,
    table_templates,
    template_features,
    verify_11,
)
from arcflow.evaluate.result import rate_key
from arcflow.evaluate.scores import roc_points, tar_at_far_nearest

pytestmark = pytest.mark.unit

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


# ----------------------------------------------------------------------------- helpers


def _naive_templates(
    feats: np.ndarray, tids: np.ndarray, mids: np.ndarray, faceness: np.ndarray | None
) -> dict[int, np.ndarray]:
    """insightface's loops: scale, mean per media, sum over media, normalise (float64)."""
    x = feats.astype(np.float64)
    if faceness is not None:
        x = x * faceness[:, None]
    out = {}
    for t in np.unique(tids):
        total = sum(x[(tids == t) & (mids == m)].mean(axis=0) for m in np.unique(mids[tids == t]))
        out[int(t)] = total / np.linalg.norm(total)
    return out


def _table(tids: list[int], subjects: list[int]) -> TemplateTable:
    n = len(tids)
    names = np.array([f"img/{i}.jpg" for i in range(n)])
    extra = np.array([[str(i), "1", "2", "3", "4"] for i in range(n)]).reshape(n, 5)
    header = (
        *protocol.CSV_KEY_COLUMNS,
        "SIGHTING_ID",
        "FACE_X",
        "FACE_Y",
        "FACE_WIDTH",
        "FACE_HEIGHT",
    )
    return TemplateTable(header, np.array(tids), np.array(subjects), names, extra)


def _toy_ijb(seed: int = 0, n_templates: int = 40, dim: int = 8) -> dict:
    """A small IJB set: 15 subjects, images in templates and media, noisy features, pairs, 1:N.

    Template k (id 1000 + k) belongs to subject 1 + k % 15; its images are the subject's centre
    plus noise, so genuine pairs score higher and every metric lands strictly between 0 and 1.
    """
    rng = np.random.default_rng(seed)
    n_images = 4 * n_templates
    k = np.concatenate([np.arange(n_templates), rng.integers(0, n_templates, 3 * n_templates)])
    k = k[rng.permutation(n_images)]
    subjects = 1 + np.arange(n_templates) % 15
    centres = rng.standard_normal((16, dim))
    plain = (centres[subjects[k]] + 1.5 * rng.standard_normal((n_images, dim))).astype(np.float32)
    plain *= rng.uniform(5, 20, (n_images, 1)).astype(np.float32)  # unnormalised, like a model's
    flipped = plain + rng.standard_normal((n_images, dim)).astype(np.float32)
    faceness = np.round(rng.uniform(0.5, 1.0, n_images), 3).astype(np.float32)
    mids = 50 + (k % 7) * 10 + rng.integers(0, 3, n_images)  # media ids shared across templates
    all_t = 1000 + np.arange(n_templates)
    a, b = (
        x.ravel() for x in np.meshgrid(np.arange(10), np.arange(10, n_templates), indexing="ij")
    )
    labels = (subjects[a] == subjects[b]).astype(np.int8)
    probe_rows = np.repeat(np.arange(15, n_templates), 2)  # each probe template on two rows
    return {
        "meta": FaceTidMid(np.array([f"{i}.jpg" for i in range(n_images)]), 1000 + k, mids),
        "plain": plain,
        "flipped": flipped,
        "faceness": faceness,
        "pairs": TemplatePairs(all_t[a], all_t[b], labels),
        "galleries": {
            "G1": _table(all_t[:8].tolist(), subjects[:8].tolist()),
            "G2": _table(all_t[8:15].tolist(), subjects[8:15].tolist()),
        },
        "probes": _table(all_t[probe_rows].tolist(), subjects[probe_rows].tolist()),
    }


# ------------------------------------------------------------------------------ pooling


def test_template_features_by_hand() -> None:
    # template 10: media 1 = [2,0]*1 and [8,0]*0.5 -> mean [3,0]; media 2 = [0,2]*2 -> [0,4];
    # sum [3,4] -> [0.6, 0.8]. template 7 uses media id 1 too (its own group): mean of
    # [0,-1] and [0,-3] = [0,-2] -> [0,-1]. Rows are interleaved on purpose.
    feats = np.array([[2, 0], [0, -1], [8, 0], [0, 2], [0, -3]], np.float32)
    tids = np.array([10, 7, 10, 10, 7])
    mids = np.array([1, 1, 1, 2, 1])
    faceness = np.array([1.0, 1.0, 0.5, 2.0, 1.0], np.float32)
    out_tids, out = template_features(feats, tids, mids, faceness)
    assert np.array_equal(out_tids, [7, 10])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, -1.0], [0.6, 0.8]], rtol=1e-6, atol=1e-7)
    # without faceness: media 1 mean [5,0], media 2 [0,2] -> [5,2] / sqrt(29)
    _, out = template_features(feats, tids, mids)
    np.testing.assert_allclose(out[1], np.array([5, 2]) / math.sqrt(29), rtol=1e-6)


def test_template_features_equal_the_reference_loops() -> None:
    rng = np.random.default_rng(1)
    n = 600
    feats = rng.standard_normal((n, 16)).astype(np.float32)
    tids = rng.integers(0, 50, n) * 3 + 5
    mids = rng.integers(0, 6, n)
    faceness = rng.random(n).astype(np.float32)
    out_tids, out = template_features(feats, tids, mids, faceness)
    expected = _naive_templates(feats, tids, mids, faceness)
    assert out_tids.tolist() == sorted(expected)
    np.testing.assert_allclose(out, np.stack([expected[t] for t in out_tids]), atol=1e-6)


def test_template_features_rejects_misaligned_inputs() -> None:
    feats = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"media_ids must have shape \(3,\)"):
        template_features(feats, np.arange(3), np.arange(2))
    with pytest.raises(ValueError, match=r"faceness must have shape \(3,\)"):
        template_features(feats, np.arange(3), np.arange(3), np.ones(4))
    with pytest.raises(ValueError, match="features must have shape"):
        template_features(np.ones(3), np.arange(3), np.arange(3))


# ------------------------------------------------------------------------ pair scores


@pytest.mark.parametrize("block_bytes", [64, 1000, 1 << 28])
@pytest.mark.parametrize("id_scale", [1, 10**9])  # dense id table / sorted search
def test_score_template_pairs_equal_naive_dots(block_bytes: int, id_scale: int) -> None:
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((300, 32)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = rng.permutation(300) * id_scale + 17  # unsorted, sparse ids
    t1 = ids[rng.integers(0, 100, 5000)]
    t2 = ids[rng.integers(50, 300, 5000)]  # the two sides overlap
    scores = score_template_pairs(ids, feats, t1, t2, block_bytes=block_bytes)
    row = {int(t): i for i, t in enumerate(ids)}
    naive = [
        float(feats[row[a]].astype(np.float64) @ feats[row[b]]) for a, b in zip(t1, t2, strict=True)
    ]
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, naive, atol=1e-6, rtol=0)


def test_score_template_pairs_names_an_unknown_template() -> None:
    feats = np.eye(3, dtype=np.float32)
    ids = np.array([4, 5, 6])
    with pytest.raises(DataFormatError, match="pair 2: second template 999"):
        score_template_pairs(ids, feats, np.array([4, 5, 6]), np.array([5, 6, 999]))
    with pytest.raises(DataFormatError, match="pair 0: first template -1"):
        score_template_pairs(ids, feats, np.array([-1]), np.array([5]))
    with pytest.raises(ValueError, match="unique; 5 appears"):
        score_template_pairs(np.array([4, 5, 5]), feats, np.array([4]), np.array([5]))


# --------------------------------------------------------------------------------- 1:1


def test_verify_11_reads_sklearn_roc_the_reference_way() -> None:
    roc_curve = sklearn_metrics.roc_curve
    rng = np.random.default_rng(5)
    labels = (rng.random(20_000) < 0.05).astype(np.int8)
    scores = (rng.standard_normal(20_000) * 0.1 + 0.4 * labels).astype(np.float32)
    result = verify_11(scores, labels, prefix="x_")
    fpr, tpr, _ = roc_curve(labels, scores)
    for far in FARS:
        flipped_fpr, flipped_tpr = np.flipud(fpr), np.flipud(tpr)
        best = min(range(len(fpr)), key=lambda i: (abs(flipped_fpr[i] - far), i))
        assert result.metrics[f"x_tar_far_{far:.0e}".replace("e-0", "e-")] == flipped_tpr[best]
    assert set(result.metrics) == {
        *(f"x_tar_far_1e-{k}" for k in range(1, 7)),
        "x_auc",
        "x_eer",
    }
    assert result.details == {
        "n_genuine": int(labels.sum()),
        "n_impostor": int((labels == 0).sum()),
    }
    assert np.array_equal(result.roc[0], fpr) and np.array_equal(result.roc[1], tpr)


# --------------------------------------------------------------------------------- 1:N

# Gallery templates 100..103 are one-hot features, so a probe's feature IS its score row.
# Subjects: 100 -> 1, 101 and 102 -> 2 (scores max over both), 103 -> 3.
GALLERY_TIDS = [100, 101, 102, 103]
GALLERY_SUBJECTS = [1, 2, 2, 3]
PROBES = {  # tid: (subject, scores against 100, 101, 102, 103)
    200: (1, [0.9, 0.5, 0.2, 0.1]),  # mated 0.9, nothing above: rank 1
    201: (2, [0.7, 0.3, 0.6, 0.1]),  # mated max(.3,.6)=.6; subject 1 (.7) above: rank 2
    202: (3, [0.4, 0.4, 0.0, 0.4]),  # mated .4 tied with subjects 1 and 2: rank 3
    203: (1, [0.8, 0.8, 0.1, 0.2]),  # mated .8 tied with subject 2: rank 2
    204: (3, [0.1, 0.2, 0.3, 0.5]),  # mated .5 above all: rank 1
    300: (9, [0.3, 0.1, 0.2, 0.0]),  # non-mated, best .3
    301: (8, [0.1, 0.6, 0.0, 0.2]),  # non-mated, best .6
    302: (7, [0.0, 0.0, 0.5, 0.0]),  # non-mated, best .5
    303: (6, [0.2, 0.1, 0.1, 0.1]),  # non-mated, best .2
}
# non-mated bests descending: .6 .5 .3 .2 (n = 4); rank-1 correct mated: 200 (.9), 204 (.5)
# fpir .1 -> index max(int(.4)-1, 0) = 0 -> .6: only 200 -> 1/5
# fpir .25 -> index 0 -> .6 -> 1/5; fpir .5 -> index 1 -> .5: 204 ties, not above -> 1/5
# fpir .75 -> index 2 -> .3 -> 2/5; fpir 1 -> index 3 -> .2 -> 2/5
EXPECTED_1N = {
    "rank1": 2 / 5,
    "rank2": 4 / 5,
    "rank3": 1.0,
    "tpir_fpir_1e-1": 1 / 5,
    "tpir_fpir_2.5e-1": 1 / 5,
    "tpir_fpir_5e-1": 1 / 5,
    "tpir_fpir_7.5e-1": 2 / 5,
    "tpir_fpir_1e0": 2 / 5,
}


def _hand_gallery() -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(GALLERY_TIDS + list(PROBES))
    feats = np.zeros((ids.size, 4), np.float32)
    feats[:4] = np.eye(4)
    feats[4:] = [row for _, row in PROBES.values()]
    return ids, feats


def test_identify_1n_by_hand_with_ties() -> None:
    ids, feats = _hand_gallery()
    probe_tids = np.array(list(PROBES))
    probe_subjects = np.array([s for s, _ in PROBES.values()])
    got = identify_1n(
        ids,
        feats,
        np.array(GALLERY_TIDS),
        np.array(GALLERY_SUBJECTS),
        probe_tids,
        probe_subjects,
        ranks=(1, 2, 3),
        fpirs=(0.1, 0.25, 0.5, 0.75, 1.0),
    )
    assert got == EXPECTED_1N


def test_identify_1n_without_non_mated_probes_has_no_tpir() -> None:
    ids, feats = _hand_gallery()
    got = identify_1n(
        ids,
        feats,
        np.array(GALLERY_TIDS),
        np.array(GALLERY_SUBJECTS),
        ids[4:9],
        np.array([1, 2, 3, 1, 3]),
    )
    assert got["rank1"] == 2 / 5 and got["rank5"] == 1.0
    assert math.isnan(got["tpir_fpir_1e-2"])


def test_identify_1n_rejects_bad_input() -> None:
    ids, feats = _hand_gallery()
    g, s = np.array(GALLERY_TIDS), np.array(GALLERY_SUBJECTS)
    with pytest.raises(DataFormatError, match=r"probe template 777 \(position 1\)"):
        identify_1n(ids, feats, g, s, np.array([200, 777]), np.array([1, 1]))
    with pytest.raises(DataFormatError, match="gallery template 5"):
        identify_1n(ids, feats, np.array([5]), np.array([1]), np.array([200]), np.array([1]))
    with pytest.raises(ValueError, match="no probe's subject"):
        identify_1n(ids, feats, g, s, np.array([300]), np.array([9]))
    with pytest.raises(ValueError, match="ranks"):
        identify_1n(ids, feats, g, s, np.array([200]), np.array([1]), ranks=(0,))


def test_identify_1n_galleries_dedupes_pools_ranks_and_averages_tpir() -> None:
    ids, feats = _hand_gallery()
    # G1 as above with each template on two rows; G2 = subject 1 only
    g1 = _table([100, 100, 101, 102, 103, 103], [1, 1, 2, 2, 3, 3])
    g2 = _table([100], [1])
    probe_tids = [t for t in PROBES for _ in range(3)]
    probes = _table(probe_tids, [PROBES[t][0] for t in probe_tids])
    kw = {"ranks": (1, 2, 3), "fpirs": (0.5,)}
    pooled = identify_1n_galleries(ids, feats, [g1, g2], probes, **kw)
    averaged = identify_1n_galleries(ids, feats, [g1, g2], probes, **kw, rank_pooling="averaged")
    # G1: 5 mated probes, ranks 1 2 3 2 1. G2: mated probes 200 (.9) and 203 (.8), no rivals:
    # 2 of 2 at rank 1; non-mated bests (subject 1 column): .4 .7 .1 .3 .8 .1 .0 .2 -> desc
    # .8 .7 .4 .3 .2 .1 .1 .0; fpir .5 -> index 3 -> .3 -> TPIR 1.
    # pooled rank k = (G1 hits + G2 hits) / (5 + 2): rank1 (2 + 2) / 7, rank2 (4 + 2) / 7
    assert pooled == {
        "1n_rank1": 4 / 7,
        "1n_rank2": 6 / 7,
        "1n_rank3": 1.0,
        "1n_tpir_fpir_5e-1": (EXPECTED_1N["tpir_fpir_5e-1"] + 1.0) / 2,
    }
    g2_expected = {"rank1": 1.0, "rank2": 1.0, "rank3": 1.0, "tpir_fpir_5e-1": 1.0}
    for key, value in g2_expected.items():
        assert averaged[f"1n_{key}"] == pytest.approx((EXPECTED_1N[key] + value) / 2, abs=1e-15)
    assert set(averaged) == {f"1n_{k}" for k in g2_expected}
    with pytest.raises(ValueError, match="rank_pooling"):
        identify_1n_galleries(ids, feats, [g1, g2], probes, rank_pooling="mean")  # type: ignore[arg-type]


def _brute_ranks(
    feats: dict[int, np.ndarray], gallery: TemplateTable, probe_tids: list[int], subject: dict
) -> list[int]:
    """Each mated probe's rank in one gallery, probe by probe: 1 + the other subjects whose
    best template scores >= the mated subject's best (float64 dots, ties against the probe)."""
    ranks = []
    for probe in probe_tids:
        best: dict[int, float] = {}
        for t, s in zip(gallery.template_ids.tolist(), gallery.subject_ids.tolist(), strict=True):
            best[s] = max(best.get(s, -np.inf), float(feats[probe] @ feats[t]))
        if subject[probe] in best:
            mated = best[subject[probe]]
            ranks.append(1 + sum(v >= mated for s, v in best.items() if s != subject[probe]))
    return ranks


def test_identify_1n_galleries_pooled_and_averaged_equal_per_probe_loops() -> None:
    """Random templates; G1 holds 6 subjects (2 templates each), G2 the other 4; probes of a G2
    subject are noisier and fewer, so the galleries' rates and mated counts differ."""
    rng = np.random.default_rng(11)
    dim, n_subjects = 6, 10
    centres = rng.standard_normal((n_subjects, dim))
    tids, subjects, rows = [], [], []
    for s in range(n_subjects):
        for _ in range(2):  # gallery templates
            tids.append(len(tids) + 1)
            subjects.append(s)
            rows.append(centres[s] + 0.6 * rng.standard_normal(dim))
    probe_tids = []
    for s in range(n_subjects):
        for _ in range(7 if s < 6 else 3):
            probe_tids.append(len(tids) + 1)
            tids.append(probe_tids[-1])
            subjects.append(s)
            rows.append(centres[s] + (0.9 if s < 6 else 1.6) * rng.standard_normal(dim))
    x = np.array(rows, np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    feats = {t: x[i].astype(np.float64) for i, t in enumerate(tids)}
    subject = dict(zip(tids, subjects, strict=True))
    gallery_rows = [i for i, t in enumerate(tids) if t not in probe_tids]
    g1 = _table([tids[i] for i in gallery_rows[:12]], [subjects[i] for i in gallery_rows[:12]])
    g2 = _table([tids[i] for i in gallery_rows[12:]], [subjects[i] for i in gallery_rows[12:]])
    probes = _table(probe_tids, [subject[t] for t in probe_tids])
    ranks = (1, 2, 3)
    pooled = identify_1n_galleries(np.array(tids), x, [g1, g2], probes, ranks, fpirs=(0.1,))
    averaged = identify_1n_galleries(
        np.array(tids), x, [g1, g2], probes, ranks, fpirs=(0.1,), rank_pooling="averaged"
    )
    per_gallery = [_brute_ranks(feats, g, probe_tids, subject) for g in (g1, g2)]
    assert [len(r) for r in per_gallery] == [42, 12]  # every probe is mated in exactly one
    for k in ranks:
        hits = [sum(r <= k for r in rs) for rs in per_gallery]
        # Keras_insightface: (G1 hits + G2 hits) / number of probes
        assert pooled[f"1n_rank{k}"] == pytest.approx(sum(hits) / len(probe_tids), abs=1e-15)
        rates = [h / len(rs) for h, rs in zip(hits, per_gallery, strict=True)]
        assert averaged[f"1n_rank{k}"] == pytest.approx(np.mean(rates), abs=1e-15)
    assert pooled["1n_rank1"] != pytest.approx(averaged["1n_rank1"], abs=1e-3)
    assert pooled["1n_tpir_fpir_1e-1"] == averaged["1n_tpir_fpir_1e-1"]


def test_table_templates_rejects_a_template_with_two_subjects() -> None:
    tids, subjects = table_templates(_table([7, 5, 7], [1, 2, 1]))
    assert tids.tolist() == [5, 7] and subjects.tolist() == [2, 1]
    with pytest.raises(
        DataFormatError, match=r"G1: template 7 has SUBJECT_ID 1 \(row 1\) and 3 \(row 3\)"
    ):
        table_templates(_table([7, 5, 7], [1, 2, 3]), "G1")


# ------------------------------------------------------------------------- evaluate_ijb


TOY_FARS = (1e-3, 1e-2, 0.05, 0.1, 0.2, 0.5)  # 280 impostor pairs: coarser FARs matter


def _naive_toy_templates(data: dict, variant: str) -> dict[int, np.ndarray]:
    meta = data["meta"]
    if variant == "reference":  # f(x) + f(flip(x)), times faceness, no per-image norm
        feats, faceness = data["plain"] + data["flipped"], data["faceness"]
    else:  # unit f(x) only
        feats, faceness = data["plain"] / np.linalg.norm(data["plain"], axis=1, keepdims=True), None
    return _naive_templates(feats, meta.template_ids, meta.media_ids, faceness)


def _naive_11(data: dict, variant: str) -> dict[str, float]:
    """The reference 1:1 procedure in plain loops and sklearn, as the IJB notebooks run it."""
    roc_curve = sklearn_metrics.roc_curve
    templates, pairs = _naive_toy_templates(data, variant), data["pairs"]
    scores = [
        templates[a] @ templates[b] for a, b in zip(pairs.template1, pairs.template2, strict=True)
    ]
    fpr, tpr, _ = roc_curve(pairs.labels, scores)
    return {rate_key("tar_far", far): tar_at_far_nearest(fpr, tpr, far) for far in TOY_FARS}


def _naive_1n(
    templates: dict, gallery: TemplateTable, probes: TemplateTable
) -> tuple[dict[str, float], list[int]]:
    """Keras_insightface's per-probe loop (one template per gallery subject), ties pessimistic:
    the gallery's rates and each mated probe's rank."""
    g_subjects = dict(zip(gallery.template_ids.tolist(), gallery.subject_ids.tolist(), strict=True))
    p_subjects = dict(zip(probes.template_ids.tolist(), probes.subject_ids.tolist(), strict=True))
    mated, rank, nonmated = [], [], []
    for probe, subject in p_subjects.items():
        scores = {g_subjects[g]: float(templates[probe] @ templates[g]) for g in g_subjects}
        if subject in scores:
            others = [v for s, v in scores.items() if s != subject]
            mated.append(scores[subject])
            rank.append(1 + sum(v >= scores[subject] for v in others))
        else:
            nonmated.append(max(scores.values()))
    nonmated.sort(reverse=True)
    out = {f"rank{k}": sum(r <= k for r in rank) / len(rank) for k in (1, 5, 10)}
    for f in (1e-2, 1e-1):
        threshold = nonmated[max(int(len(nonmated) * f) - 1, 0)]
        hits = sum(r == 1 and m > threshold for r, m in zip(rank, mated, strict=True))
        out[rate_key("tpir_fpir", f)] = hits / len(rank)
    return out, rank


def test_evaluate_ijb_equals_the_reference_procedure() -> None:
    data = _toy_ijb()
    galleries = data["galleries"]
    result = evaluate_ijb(
        data["plain"], data["flipped"], data["meta"], data["faceness"], data["pairs"],
        galleries, data["probes"], fars=TOY_FARS,
    )  # fmt: skip
    expected = _naive_11(data, "reference")
    expected.update({f"plain_{k}": v for k, v in _naive_11(data, "plain").items()})
    assert {k: result.metrics[k] for k in expected} == expected
    assert 0 < expected["tar_far_1e-2"] < expected["tar_far_1e-1"] < 1  # a curve, not a corner
    assert expected["tar_far_1e-2"] != expected["plain_tar_far_1e-2"]
    templates = _naive_toy_templates(data, "reference")
    runs = [_naive_1n(templates, g, data["probes"]) for g in galleries.values()]
    n_probes = np.unique(data["probes"].template_ids).size
    averaged = evaluate_ijb(
        data["plain"], data["flipped"], data["meta"], data["faceness"], data["pairs"],
        galleries, data["probes"], fars=TOY_FARS, rank_pooling="averaged",
    ).metrics  # fmt: skip
    for key in runs[0][0]:
        mean = np.mean([r[key] for r, _ in runs])
        assert averaged[f"1n_{key}"] == pytest.approx(mean)
        if key.startswith("rank"):  # Keras_insightface: (G1 hits + G2 hits) / number of probes
            k = int(key[4:])
            pooled = sum(sum(r <= k for r in ranks) for _, ranks in runs) / n_probes
            assert result.metrics[f"1n_{key}"] == pytest.approx(pooled)
        else:  # TPIR: the mean of the galleries'
            assert result.metrics[f"1n_{key}"] == pytest.approx(mean)
    assert result.metrics["1n_rank1"] != pytest.approx(averaged["1n_rank1"])
    assert result.details["1n_rank_pooling"] == "pooled"
    assert 0 < result.metrics["1n_rank1"] < 1 and 0 < result.metrics["1n_tpir_fpir_1e-1"] < 1
    fpr, tpr, _ = roc_points(data["pairs"].labels, _reference_scores(data))
    assert np.array_equal(result.roc[0], fpr) and np.array_equal(result.roc[1], tpr)
    assert result.details["n_templates"] == 40 and result.details["n_images"] == 160
    assert (result.details["n_genuine"], result.details["n_impostor"]) == (20, 280)


def _reference_scores(data: dict) -> np.ndarray:
    meta = data["meta"]
    feats = data["plain"] + data["flipped"]
    tids, t = template_features(feats, meta.template_ids, meta.media_ids, data["faceness"])
    return score_template_pairs(tids, t, data["pairs"].template1, data["pairs"].template2)


def test_evaluate_ijb_round_trip_through_the_protocol_files(tmp_path: Path) -> None:
    data = _toy_ijb(seed=3)
    meta, pairs = data["meta"], data["pairs"]
    files = protocol.ijb_files(tmp_path, "ijbc")
    files.face_tid_mid.parent.mkdir(parents=True)
    protocol.write_face_tid_mid(files.face_tid_mid, meta)
    protocol.write_template_pair_label(files.template_pair_label, pairs)
    n = len(meta.names)
    points = FivePoints(meta.names, np.zeros((n, 5, 2), np.float32), data["faceness"])
    protocol.write_name_5pts_score(files.name_5pts_score, points)
    protocol.write_template_table(files.gallery1, data["galleries"]["G1"])
    protocol.write_template_table(files.gallery2, data["galleries"]["G2"])
    protocol.write_template_table(files.probe_mixed, data["probes"])

    direct = evaluate_ijb(
        data["plain"], data["flipped"], meta, data["faceness"], pairs,
        list(data["galleries"].values()), data["probes"],
    )  # fmt: skip
    read_meta = protocol.read_face_tid_mid(files.face_tid_mid)
    read_points = protocol.read_name_5pts_score(files.name_5pts_score)
    assert np.array_equal(read_points.names, read_meta.names)
    galleries = [protocol.read_template_table(p) for p in (files.gallery1, files.gallery2)]
    read = evaluate_ijb(
        data["plain"], data["flipped"], read_meta, read_points.scores,
        protocol.read_template_pair_label(files.template_pair_label),
        galleries, protocol.read_template_table(files.probe_mixed),
    )  # fmt: skip
    assert read.metrics == direct.metrics
    assert np.array_equal(read.roc[0], direct.roc[0]) and np.array_equal(read.roc[1], direct.roc[1])
    assert {"1n_rank1", "1n_rank10", "1n_tpir_fpir_1e-2", "plain_tar_far_1e-4", "eer"} <= set(
        read.metrics
    )
    assert 0.0 <= read.metrics["1n_rank1"] <= read.metrics["1n_rank5"] <= 1.0


def test_evaluate_ijb_without_flip_or_faceness() -> None:
    data = _toy_ijb(seed=4)
    result = evaluate_ijb(data["plain"], None, data["meta"], None, data["pairs"])
    meta = data["meta"]
    tids, t = template_features(data["plain"], meta.template_ids, meta.media_ids)
    scores = score_template_pairs(tids, t, data["pairs"].template1, data["pairs"].template2)
    expected = verify_11(scores, data["pairs"].labels).metrics
    assert {k: v for k, v in result.metrics.items() if not k.startswith("plain_")} == expected
    assert result.details["flip"] == "none" and result.details["faceness"] == "no"


def test_evaluate_ijb_rejects_bad_input() -> None:
    data = _toy_ijb(seed=5)
    plain, flipped, meta, faceness, pairs = (
        data[k] for k in ("plain", "flipped", "meta", "faceness", "pairs")
    )
    with pytest.raises(ValueError, match=r"plain must have shape \(160, D\)"):
        evaluate_ijb(plain[:-1], None, meta, None, pairs)
    with pytest.raises(ValueError, match="flipped"):
        evaluate_ijb(plain, flipped[:, :4], meta, None, pairs)
    with pytest.raises(ValueError, match=r"faceness must have shape \(160,\)"):
        evaluate_ijb(plain, None, meta, faceness[:5], pairs)
    with pytest.raises(ValueError, match="both galleries and probes"):
        evaluate_ijb(plain, None, meta, None, pairs, galleries=list(data["galleries"].values()))
    bad = TemplatePairs(np.array([1000, 1001]), np.array([1002, 5555]), np.array([1, 0], np.int8))
    with pytest.raises(DataFormatError, match="pair 1: second template 5555"):
        evaluate_ijb(plain, None, meta, None, bad)
    short = TemplatePairs(pairs.template1, pairs.template2, pairs.labels[:-1])
    with pytest.raises(ValueError, match="template pairs differ in length"):
        evaluate_ijb(plain, None, meta, None, short)
