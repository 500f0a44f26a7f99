"""The benchmark registry: selection, availability, and a pair set scored end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arcflow.config import BENCHMARK_NAMES, EvaluateParams
from arcflow.data.binpairs import save_bin
from arcflow.data.transforms import encode_jpeg
from arcflow.errors import ConfigError
from arcflow.evaluate.context import EvalContext
from arcflow.evaluate.suite import BENCHMARKS, BY_NAME, missing_files, run_suite, select
from arcflow.evaluate.verification import evaluate_pairs

pytestmark = pytest.mark.unit


class MeanColourEncoder:
    key = "mean-colour"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch.mean(axis=(2, 3)) + np.array([0.0, 0.0, 2.0], np.float32)


def test_registry_covers_every_configurable_benchmark() -> None:
    assert tuple(b.name for b in BENCHMARKS) == BENCHMARK_NAMES
    assert [b.name for b in select(["all"])] == list(BENCHMARK_NAMES)
    assert [b.name for b in select(["ijbc", "lfw"])] == ["lfw", "ijbc"]  # paper order
    with pytest.raises(ConfigError, match="nope"):
        select(["nope"])


def test_absent_benchmarks_are_not_available(tmp_path: Path) -> None:
    ctx = EvalContext(tmp_path, MeanColourEncoder())
    results = run_suite(ctx, EvaluateParams(), select(["all"]))
    assert list(results) == list(BENCHMARK_NAMES)
    assert all(result is None for result in results.values())
    assert missing_files(ctx, BY_NAME["ijbc"])[0] == "sets/ijbc.rec"


def test_a_pair_set_is_scored_with_the_reference_protocol(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (20, 3))
    images, issame = [], []
    for i in range(40):
        same = i % 2 == 0
        a = base[i % 20]
        b = a if same else base[(i + 7) % 20]
        for colour in (a, b + rng.integers(-20, 20, 3) * same):
            img = np.broadcast_to(np.clip(colour, 0, 255).astype(np.uint8), (112, 112, 3))
            images.append(encode_jpeg(np.ascontiguousarray(img)))
        issame.append(same)
    save_bin(tmp_path / "lfw.bin", images, issame)
    ctx = EvalContext(tmp_path, MeanColourEncoder(), batch_size=16)
    result = run_suite(ctx, EvaluateParams(), select(["lfw", "ytf"]))
    lfw = result["lfw"]
    assert result["ytf"] is None and lfw is not None
    features = ctx.pair_set("lfw")[1].combined()
    expected = evaluate_pairs(features, np.array(issame))
    assert lfw.metrics["accuracy"] == expected.accuracy
    assert lfw.metrics["accuracy_std"] == expected.accuracy_std
    assert lfw.metrics["val"] == expected.val
    assert 0.0 <= lfw.metrics["eer"] <= 0.5 and lfw.details["pairs"] == 40
    assert lfw.roc is not None and lfw.roc[0][-1] == 1.0
