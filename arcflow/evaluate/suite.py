"""Every benchmark of the paper: what it needs on disk, its headline metric, how to run it.

A benchmark whose files are absent is reported as not available (never dropped, never 0).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from arcflow.config import EvaluateParams
from arcflow.errors import ConfigError
from arcflow.evaluate import runners
from arcflow.evaluate.context import EvalContext
from arcflow.evaluate.result import BenchmarkResult

log = logging.getLogger("arcflow")


@dataclass(frozen=True)
class Benchmark:
    """``requires``: paths under the evaluation folder that must all exist to run it."""

    name: str
    title: str
    headline: str
    requires: tuple[str, ...]
    run: runners.Runner
    inputs: tuple[tuple[str, str], ...] = ()  # what it embeds: ("pairs"|"set", name)


def _pairs(name: str, title: str) -> Benchmark:
    return Benchmark(
        name, title, "accuracy", (f"{name}.bin",), runners.pair_set(name), (("pairs", name),)
    )


def _ijb(name: str, title: str) -> Benchmark:
    meta = f"protocols/{name}/meta/{name}"
    return Benchmark(
        name,
        title,
        "tar_far_1e-4",
        (
            f"sets/{name}.rec",
            f"{meta}_face_tid_mid.txt",
            f"{meta}_template_pair_label.txt",
            f"{meta}_name_5pts_score.txt",
        ),
        runners.ijb(name),
        (("set", name),),
    )


BENCHMARKS: tuple[Benchmark, ...] = (
    _pairs("lfw", "LFW"),
    _pairs("cfp_fp", "CFP-FP"),
    _pairs("cfp_ff", "CFP-FF"),
    _pairs("agedb_30", "AgeDB-30"),
    _pairs("calfw", "CALFW"),
    _pairs("cplfw", "CPLFW"),
    _pairs("vgg2_fp", "VGG2-FP"),
    Benchmark("ytf", "YTF", "accuracy", ("sets/ytf.rec", "protocols/ytf/splits.txt"), runners.ytf),
    Benchmark(
        "megaface",
        "MegaFace",
        "rank1",
        ("sets/megaface.rec", "protocols/megaface/templatelists/facescrub_features_list.json"),
        runners.megaface,
        (("set", "megaface"),),
    ),
    _ijb("ijbb", "IJB-B"),
    _ijb("ijbc", "IJB-C"),
    Benchmark(
        "trillion_pairs",
        "Trillion-Pairs",
        "ver_tpr_fpr_1e-9",
        (
            "sets/trillion_pairs.rec",
            "protocols/trillion_pairs/filelist.txt",
            "protocols/trillion_pairs/labels.txt",
        ),
        runners.trillion_pairs,
        (("set", "trillion_pairs"),),
    ),
    Benchmark(
        "iqiyi_vid",
        "iQIYI-VID",
        "map_at_100",
        (
            "sets/iqiyi_vid.rec",
            "protocols/iqiyi_vid/gt_v2/train_v2.txt",
            "protocols/iqiyi_vid/gt_v2/val_v2.txt",
        ),
        runners.iqiyi_vid,
        (("set", "iqiyi_vid"),),
    ),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def select(names: Sequence[str]) -> list[Benchmark]:
    """The benchmarks called ``names`` (``["all"]`` = every one), in the paper's order."""
    if list(names) == ["all"]:
        return list(BENCHMARKS)
    unknown = sorted(set(names) - set(BY_NAME))
    if unknown:
        raise ConfigError(
            f"evaluate.benchmarks: unknown {', '.join(unknown)}; "
            f"choose from all, {', '.join(BY_NAME)}"
        )
    return [b for b in BENCHMARKS if b.name in names]


def missing_files(ctx: EvalContext, benchmark: Benchmark) -> list[str]:
    """The required files of ``benchmark`` absent from the evaluation folder."""
    return [rel for rel in benchmark.requires if not (ctx.root / rel).is_file()]


def embed_all(ctx: EvalContext, benchmarks: Sequence[Benchmark]) -> None:
    """Embed what every available benchmark needs into the cache (all torchrun ranks call it)."""
    for benchmark in benchmarks:
        if not missing_files(ctx, benchmark):
            for kind, name in benchmark.inputs:
                ctx.prefetch(kind, name)


def run_suite(
    ctx: EvalContext, cfg: EvaluateParams, benchmarks: Sequence[Benchmark]
) -> dict[str, BenchmarkResult | None]:
    """Run every available benchmark; an unavailable one maps to None (and is logged)."""
    results: dict[str, BenchmarkResult | None] = {}
    for benchmark in benchmarks:
        missing = missing_files(ctx, benchmark)
        if missing:
            log.info("evaluate: %s not available (no %s)", benchmark.title, missing[0])
            results[benchmark.name] = None
            continue
        start = time.perf_counter()
        result = benchmark.run(ctx, cfg)
        results[benchmark.name] = result
        log.info(
            "evaluate: %s %s %.4f (%.1f s)",
            benchmark.title,
            benchmark.headline,
            result.metrics.get(benchmark.headline, float("nan")),
            time.perf_counter() - start,
        )
    return results
