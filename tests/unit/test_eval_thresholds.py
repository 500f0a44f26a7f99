"""Decision thresholds: the rule against a brute-force search, ties, resolution, the JSON
document read back strictly, the choice of calibration set, and the runners' scores."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from arcflow.config import EvaluateParams
from arcflow.data.binpairs import save_bin
from arcflow.data.transforms import encode_jpeg
from arcflow.errors import DataFormatError
from arcflow.evaluate.context import EvalContext
from arcflow.evaluate.embed import l2_normalize
from arcflow.evaluate.report import markdown_report, thresholds_section
from arcflow.evaluate.result import BenchmarkResult, VerificationScores
from arcflow.evaluate.suite import BY_NAME
from arcflow.evaluate.thresholds import (
    FARS,
    OperatingPoint,
    Thresholds,
    accepts,
    calibrate,
    calibrate_results,
    calibration_set,
    cosine_scores,
    far_key,
    is_resolved,
    max_accepted,
)

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------- the rule


def _brute_force(scores: np.ndarray, genuine: np.ndarray, far: float):
    """Every candidate threshold tried: the lowest one whose FAR (accept iff score > t) stays
    within ``far``, and the best (FAR, TAR) any threshold within ``far`` reaches."""
    s = np.clip(scores.astype(np.float64), -1, 1)
    imp, gen = s[~genuine], s[genuine]
    limit = Fraction(repr(far))
    candidates = np.concatenate(([-np.inf], np.unique(s)))
    false_acc = (imp[None, :] > candidates[:, None]).sum(axis=1)
    true_acc = (gen[None, :] > candidates[:, None]).sum(axis=1)
    ok = np.array([Fraction(int(fa), imp.size) <= limit for fa in false_acc])
    best = max(zip(false_acc[ok].tolist(), true_acc[ok].tolist(), strict=True))
    return float(candidates[ok].min()), best[0] / imp.size, best[1] / gen.size


def _check_against_brute_force(scores: np.ndarray, genuine: np.ndarray) -> Thresholds:
    th = calibrate(scores, genuine, set_name="s", level="image")
    n_imp = int((~genuine).sum())
    assert (th.n_genuine, th.n_impostor) == (int(genuine.sum()), n_imp)
    for far in FARS:
        key = far_key(far)
        if n_imp * Fraction(repr(far)) < 1:
            assert th.at(far) is None and key in th.unresolved
            continue
        point = th.at(far)
        assert point is not None and key not in th.unresolved
        threshold, far_best, tar_best = _brute_force(scores, genuine, far)
        assert point == OperatingPoint(threshold, far_best, tar_best), key
        assert point.far_measured <= far
        accepted = accepts(scores, point.threshold)  # re-applied: exactly what it records
        assert np.count_nonzero(accepted & ~genuine) / n_imp == point.far_measured
        assert np.count_nonzero(accepted & genuine) / genuine.sum() == point.tar
    return th


@pytest.mark.parametrize(
    ("n", "decimals", "seed"),
    [
        (1, None, 0),
        (50, None, 1),
        (999, None, 2),
        (1000, None, 3),
        (1001, None, 4),
        (3000, None, 5),
        (2500, 1, 6),  # heavy ties: 21 distinct values
        (12_000, 2, 7),  # resolves 1e-4, ties everywhere
        (12_000, 0, 8),  # three distinct values: ties swallow whole FAR levels
    ],
)
def test_rule_equals_brute_force_on_random_scores(n: int, decimals: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_gen = max(1, n // 10)
    genuine = np.zeros(n + n_gen, bool)
    genuine[rng.choice(genuine.size, n_gen, replace=False)] = True
    scores = np.where(genuine, rng.normal(0.5, 0.2, genuine.size), rng.normal(0, 0.2, genuine.size))
    if decimals is not None:
        scores = np.round(scores, decimals)
    _check_against_brute_force(np.clip(scores, -1, 1).astype(np.float32), genuine)


def test_hand_worked_ties_never_push_the_far_past_the_target() -> None:
    # 2000 impostors: m = 2 at 1e-3; the three highest tie at 0.9, so accepting any of them
    # accepts all three (FAR 1.5e-3): the threshold is 0.9 and no impostor is accepted.
    impostors = np.concatenate(([0.9, 0.9, 0.9], np.full(1997, 0.1)))
    scores = np.concatenate((impostors, [0.95, 0.9, 0.5]))
    genuine = np.arange(scores.size) >= 2000
    th = _check_against_brute_force(scores, genuine)
    assert th.at(1e-3) == OperatingPoint(0.9, 0.0, 1 / 3)
    # two tied at the top instead: they fit (m = 2), the threshold drops to the third score
    impostors[2] = 0.2
    th = _check_against_brute_force(np.concatenate((impostors, [0.95, 0.9, 0.5])), genuine)
    assert th.at(1e-3) == OperatingPoint(0.2, 2 / 2000, 1.0)
    assert th.unresolved == ("far_1e-4", "far_1e-5", "far_1e-6")


def test_resolution_rule_is_exact() -> None:
    assert max_accepted(1e-3, 999) == 0 and max_accepted(1e-3, 1000) == 1
    assert max_accepted(1e-4, 19_800) == 1 and max_accepted(1e-3, 19_800) == 19
    assert not is_resolved(1e-6, 999_999) and is_resolved(1e-6, 1_000_000)
    # 1e-6 * 3e6 is 2.9999999999999996 in floats; exactly 3
    assert max_accepted(1e-6, 3_000_000) == 3


def test_scores_past_one_are_clipped_and_bad_input_is_refused() -> None:
    a = l2_normalize(np.array([[1.0, 1e-4], [0.6, 0.8]], np.float32))
    assert cosine_scores(a, a).max() <= 1.0 and cosine_scores(a, -a).min() >= -1.0
    genuine = np.array([True] + [False] * 1000)
    scores = np.concatenate(([1.0], np.full(1000, 1.0000001)))
    th = calibrate(scores, genuine, set_name="s", level="image")
    assert th.at(1e-3) == OperatingPoint(1.0, 0.0, 0.0)  # threshold 1: accept nothing
    with pytest.raises(ValueError, match="genuine and impostor"):
        calibrate(np.zeros(3), np.zeros(3, bool), set_name="s", level="image")
    with pytest.raises(ValueError, match="finite"):
        calibrate(np.array([0.1, np.nan]), np.array([1, 0]), set_name="s", level="image")
    with pytest.raises(ValueError, match="fars"):
        calibrate(np.zeros(2), np.array([1, 0]), set_name="s", level="image", fars=[1e-2])
    with pytest.raises(ValueError, match="level"):
        calibrate(np.zeros(2), np.array([1, 0]), set_name="s", level="video")


# ------------------------------------------------------------------------------ JSON


def _example() -> Thresholds:
    rng = np.random.default_rng(0)
    genuine = np.arange(20_200) < 200
    scores = np.where(genuine, rng.normal(0.6, 0.1, genuine.size), rng.normal(0, 0.1, 20_200))
    return calibrate(scores.astype(np.float32), genuine, set_name="ijbc", level="template")


def test_json_round_trip_is_exact() -> None:
    th = _example()
    doc = json.loads(json.dumps(th.to_dict()))
    assert Thresholds.from_dict(doc, "t.json") == th
    assert doc["set"] == "ijbc" and doc["level"] == "template" and doc["score"] == "cosine"
    assert (doc["n_genuine"], doc["n_impostor"]) == (200, 20_000)
    assert list(doc["thresholds"]) == ["far_1e-3", "far_1e-4"]
    assert doc["unresolved"] == ["far_1e-5", "far_1e-6"]
    assert set(doc["thresholds"]["far_1e-4"]) == {"threshold", "far_measured", "tar"}


def _edit(path: str, value: object) -> dict:
    doc = _example().to_dict()
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("n_impostor", KeyError, "n_impostor: missing"),
        ("thresholds/far_1e-4/tar", KeyError, r"thresholds\.far_1e-4\.tar: missing"),
        ("thresholds/far_1e-4/threshold", float("nan"), "far_1e-4.threshold: expected a finite"),
        ("thresholds/far_1e-4/threshold", 3.0, r"far_1e-4\.threshold: 3\.0 is outside \[-1, 1\]"),
        ("thresholds/far_1e-4/threshold", "0.4", "far_1e-4.threshold: expected a finite"),
        ("thresholds/far_1e-4/far_measured", 2e-4, "far_1e-4.far_measured: 0.0002 is outside"),
        ("thresholds/far_1e-4/tar", True, "far_1e-4.tar: expected a finite"),
        ("thresholds/far_1e-2", {"threshold": 0, "far_measured": 0, "tar": 0}, "'far_1e-2' is not"),
        ("thresholds/far_1e-4/extra", 1, "far_1e-4.extra: unknown field"),
        ("unresolved", ["far_1e-7"], "unresolved: 'far_1e-7' is not a known FAR"),
        ("unresolved", ["far_1e-4", "far_1e-5", "far_1e-6"], "far_1e-4 is listed twice"),
        ("unresolved", "far_1e-5", "unresolved: expected a list"),
        ("n_impostor", 9_999, "thresholds.far_1e-4: unresolved with 9999 impostors"),
        ("n_impostor", 1.5e4, "n_impostor: expected a positive integer"),
        ("n_genuine", 0, "n_genuine: expected a positive integer"),
        ("set", None, "set: null"),
        ("set", "", "set: expected a benchmark name"),
        ("level", "video", "level: 'video' is not one of"),
        ("score", "euclidean", "score: 'euclidean' is not one of cosine"),
        ("accept", "score >= threshold", "accept:"),
        ("format_version", 2, "format_version"),
        ("thresholds", [], "thresholds: expected an object"),
    ],
)
def test_hostile_json_names_the_field(path: str, value: object, message: str) -> None:
    doc = json.loads(json.dumps(_edit(path, value)))  # through JSON: NaN stays NaN
    with pytest.raises(DataFormatError, match=message) as err:
        Thresholds.from_dict(doc, "thresholds.json")
    assert str(err.value).startswith("thresholds.json: ")


def test_json_must_be_an_object_and_thresholds_must_not_rise_as_far_shrinks() -> None:
    with pytest.raises(DataFormatError, match=r"\(top level\): expected an object"):
        Thresholds.from_dict([1, 2], "t.json")
    doc = _example().to_dict()
    doc["thresholds"]["far_1e-4"]["threshold"] = doc["thresholds"]["far_1e-3"]["threshold"] - 0.1
    with pytest.raises(DataFormatError, match="smaller FAR must not have a lower threshold"):
        Thresholds.from_dict(doc, "t.json")


# ------------------------------------------------------------------ calibration set


def _scored(n: int, level: str = "image") -> BenchmarkResult:
    genuine = np.arange(n) % 2 == 0
    scores = VerificationScores(np.linspace(-1, 1, n), genuine, level)
    return BenchmarkResult({"accuracy": 1.0}, scores=scores)


def test_calibration_set_prefers_ijbc_then_ijbb_then_the_largest_pair_set() -> None:
    plain = BenchmarkResult({"rank1": 1.0})  # MegaFace: no scores kept
    results = {
        "lfw": _scored(600),
        "cfp_fp": _scored(700),
        "agedb_30": _scored(700),
        "megaface": plain,
        "ijbb": _scored(100, "template"),
        "ijbc": _scored(50, "template"),
    }
    assert calibration_set(results) == "ijbc"
    results["ijbc"] = None
    assert calibration_set(results) == "ijbb"
    del results["ijbb"]
    assert calibration_set(results) == "cfp_fp"  # 700 pairs, first in suite order
    assert calibration_set({"lfw": None, "megaface": plain}) is None
    assert calibrate_results({"megaface": plain}) is None
    th = calibrate_results({"lfw": _scored(600), "ijbc": _scored(2002, "template")})
    assert th is not None and (th.set_name, th.level, th.n_impostor) == ("ijbc", "template", 1001)


def test_report_section_names_the_set_sizes_and_unresolved_fars() -> None:
    th = _example()
    section = thresholds_section(th, {"ijbc": "IJB-C"})
    assert "## Decision thresholds" in section
    assert "IJB-C (template pairs: 200 genuine, 20,000 impostor)" in section
    point = th.at(1e-4)
    assert point is not None and f"| 1e-4 | {point.threshold:.6f} |" in section
    assert "Unresolved (fewer than 1/FAR impostor pairs): 1e-5, 1e-6." in section
    report = markdown_report({"ijbc": None}, {"ijbc": "IJB-C"}, {"ijbc": "x"}, ["n"], [section])
    assert report.index("## Decision thresholds") < report.index("- n")
    assert "nothing to calibrate" in thresholds_section(None, {})


# ---------------------------------------------------------------------------- runners


class RedEncoder:
    """Features from the red channel of the left and right halves (exact, readable)."""

    key = "red-halves"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        red = batch[:, 0]
        return np.stack([red[:, :, :56].mean((1, 2)), red[:, :, 56:].mean((1, 2))], axis=1)


def test_pair_set_runner_keeps_the_pair_cosines(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    crops, issame = [], []
    for i in range(40):
        left, right = (int(v) for v in rng.integers(0, 256, 2))
        rgb = np.zeros((112, 112, 3), np.uint8)
        rgb[:, :56, 0], rgb[:, 56:, 0] = left, right
        crops.append(encode_jpeg(rgb, quality=100))
        issame.append(i % 4 < 2)
    save_bin(tmp_path / "lfw.bin", crops, issame[::2])
    ctx = EvalContext(tmp_path, RedEncoder(), batch_size=8)
    result = BY_NAME["lfw"].run(ctx, EvaluateParams())
    assert result.scores is not None and result.scores.level == "image"
    _, features = ctx.pair_set("lfw")
    emb = features.combined()
    expected = np.einsum("ij,ij->i", emb[0::2], emb[1::2])
    np.testing.assert_allclose(result.scores.scores, expected, atol=1e-6)
    np.testing.assert_array_equal(result.scores.genuine, issame[::2])
    assert not any(math.isnan(v) for v in result.metrics.values())
    assert "scores" not in result.metrics
