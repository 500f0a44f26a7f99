"""Evaluation outputs: the metrics document, ROC rows and the markdown report."""

from __future__ import annotations

import numpy as np
import pytest

from arcflow.evaluate.report import NOT_AVAILABLE, markdown_report, metrics_document, roc_rows
from arcflow.evaluate.resolution import BELOW_RESOLUTION, resolution
from arcflow.evaluate.result import BenchmarkResult, rate_key

pytestmark = pytest.mark.unit

TITLES = {"lfw": "LFW", "ijbc": "IJB-C", "megaface": "MegaFace"}
HEADLINES = {"lfw": "accuracy", "ijbc": "tar_far_1e-4", "megaface": "rank1"}


REAL_IJBC = {"n_genuine": 19_557, "n_impostor": 15_638_932}


def _results() -> dict[str, BenchmarkResult | None]:
    lfw = BenchmarkResult({"accuracy": 0.99, "accuracy_std": 0.01}, details={"pairs": 6000})
    ijbc = BenchmarkResult({"tar_far_1e-4": 0.9, "tar_far_1e-5": 0.8}, details=REAL_IJBC)
    return {"lfw": lfw, "ijbc": ijbc, "megaface": None}


def _synthface() -> dict[str, BenchmarkResult | None]:
    """Sizes as the embedded SynthFace sets have them: small, and not the real protocols'."""
    lfw = BenchmarkResult({"accuracy": 0.995}, details={"pairs": 600})
    ijbc = BenchmarkResult(
        {"tar_far_1e-4": 1.0, "tar_far_1e-5": 1.0, "tar_far_1e-6": 1.0},
        details={"n_genuine": 100, "n_impostor": 19_800},
    )
    megaface = BenchmarkResult(
        {"rank1": 0.9455, "tar_far_1e-6": 0.5264},
        details={"n_probes": 800, "n_impostor": 800_000},
    )
    return {"lfw": lfw, "ijbc": ijbc, "megaface": megaface}


def test_rate_keys_are_valid_metric_names() -> None:
    assert [rate_key("tar_far", f) for f in (1e-6, 1e-4, 0.1, 2.5e-3)] == [
        "tar_far_1e-6",
        "tar_far_1e-4",
        "tar_far_1e-1",
        "tar_far_2.5e-3",
    ]


def test_metrics_document_lists_absent_benchmarks() -> None:
    doc = metrics_document(_results())
    assert doc == {
        "lfw": {"accuracy": 0.99, "accuracy_std": 0.01},
        "ijbc": {
            "tar_far_1e-4": 0.9,
            "tar_far_1e-5": 0.8,
            "resolution_far": pytest.approx(1 / 15_638_932),
        },
        "megaface": NOT_AVAILABLE,
    }


def test_report_puts_published_numbers_beside_ours_where_the_sizes_match() -> None:
    text = markdown_report(_results(), TITLES, HEADLINES, ["model: m.pt"])
    assert "| LFW | 6,000 pairs | accuracy | 99.00 | 99.83 | 99.77 |" in text
    size = "19,557 genuine / 15,638,932 impostor"
    assert f"| IJB-C | {size} | tar_far_1e-4 | 90.00 | 95.60 | 96.18 |" in text
    assert f"| IJB-C | {size} | tar_far_1e-5 | 80.00 | – | 94.34 |" in text
    assert f"| MegaFace | | rank1 | {NOT_AVAILABLE} | | |" in text
    assert "No data for: MegaFace." in text
    assert "| pairs | 6000 |" in text and "- model: m.pt" in text
    assert "**Data: unknown**" in text


def test_a_synthface_report_cannot_be_read_as_the_papers() -> None:
    label = {"dataset": "synthface", "source": "synthface", "synthetic": True}
    text = markdown_report(_synthface(), TITLES, HEADLINES, dataset=label)
    assert text.splitlines()[2].startswith("**Data: synthface**, the embedded synthetic dataset")
    # no published number beside a set of another size
    assert "| LFW | 600 pairs | accuracy | 99.50 | – | – |" in text
    # FARs under 1/19,800 are not numbers
    below = "below resolution (the set resolves FAR ≥ 5.1e-05)"
    assert "| IJB-C | 100 genuine / 19,800 impostor | tar_far_1e-4 | 100.00 | – | – |" in text
    assert f"| tar_far_1e-5 | {below} | – | – |" in text
    assert f"| tar_far_1e-6 | {below} | – | – |" in text
    # MegaFace named with its distractor count; TAR@1e-6 of 800,000 impostors unresolved
    assert "| MegaFace | 1,000 distractors | rank1 @ 1,000 distractors | 94.55 | – | – |" in text
    assert "| MegaFace | 1,000 distractors | tar_far_1e-6 | below resolution" in text
    doc = metrics_document(_synthface())
    assert doc["ijbc"]["tar_far_1e-5"] == BELOW_RESOLUTION  # type: ignore[index]
    assert doc["ijbc"]["tar_far_1e-4"] == 1.0  # type: ignore[index]
    assert doc["megaface"]["tar_far_1e-6"] == BELOW_RESOLUTION  # type: ignore[index]
    assert doc["megaface"]["rank1"] == 0.9455  # type: ignore[index]


def test_resolution_reads_every_rate_metric() -> None:
    res = resolution(BenchmarkResult({}, details={"n_impostor": 1000}))
    assert res.min_far == 1e-3
    assert res.resolves("tar_far_1e-3") and res.resolves("accuracy") and res.resolves("rank1")
    assert not res.resolves("tar_far_1e-4") and not res.resolves("refined_tar_far_1e-6")
    assert not res.resolves("ver_tpr_fpr_1e-9") and not res.resolves("plain_tar_far_2.5e-4")
    assert resolution(BenchmarkResult({})).resolves("tar_far_1e-9")  # no count: not judged


def test_roc_rows_keep_the_ends() -> None:
    fpr = np.linspace(0, 1, 1001)
    rows = roc_rows(fpr, fpr**0.5, max_points=11)
    assert len(rows) <= 12 and rows[0] == [0.0, 0.0] and rows[-1] == [1.0, 1.0]
    assert rows[1][0] < 0.01  # the low-FPR end is kept for log plots


def test_metrics_must_be_numbers() -> None:
    with pytest.raises(TypeError, match="'a'"):
        BenchmarkResult({"a": "x"})  # type: ignore[dict-item]
