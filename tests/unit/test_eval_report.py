"""Evaluation outputs: the metrics document, ROC rows and the markdown report."""

from __future__ import annotations

import numpy as np
import pytest

from arcflow.evaluate.report import NOT_AVAILABLE, markdown_report, metrics_document, roc_rows
from arcflow.evaluate.result import BenchmarkResult, rate_key

pytestmark = pytest.mark.unit

TITLES = {"lfw": "LFW", "ijbc": "IJB-C", "megaface": "MegaFace"}
HEADLINES = {"lfw": "accuracy", "ijbc": "tar_far_1e-4", "megaface": "rank1"}


def _results() -> dict[str, BenchmarkResult | None]:
    lfw = BenchmarkResult({"accuracy": 0.99, "accuracy_std": 0.01}, details={"pairs": 6000})
    ijbc = BenchmarkResult({"tar_far_1e-4": 0.9, "tar_far_1e-5": 0.8})
    return {"lfw": lfw, "ijbc": ijbc, "megaface": None}


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
        "ijbc": {"tar_far_1e-4": 0.9, "tar_far_1e-5": 0.8},
        "megaface": NOT_AVAILABLE,
    }


def test_report_puts_published_numbers_beside_ours() -> None:
    text = markdown_report(_results(), TITLES, HEADLINES, ["model: m.pt"])
    assert "| LFW | accuracy | 99.00 | 99.83 | 99.77 |" in text
    assert "| IJB-C | tar_far_1e-4 | 90.00 | 95.60 | 96.18 |" in text
    assert "| IJB-C | tar_far_1e-5 | 80.00 | – | 94.34 |" in text
    assert f"| MegaFace | rank1 | {NOT_AVAILABLE} | | |" in text
    assert "No data for: MegaFace." in text
    assert "| pairs | 6000 |" in text and "- model: m.pt" in text


def test_roc_rows_keep_the_ends() -> None:
    fpr = np.linspace(0, 1, 1001)
    rows = roc_rows(fpr, fpr**0.5, max_points=11)
    assert len(rows) <= 12 and rows[0] == [0.0, 0.0] and rows[-1] == [1.0, 1.0]
    assert rows[1][0] < 0.01  # the low-FPR end is kept for log plots


def test_metrics_must_be_numbers() -> None:
    with pytest.raises(TypeError, match="'a'"):
        BenchmarkResult({"a": "x"})  # type: ignore[dict-item]
