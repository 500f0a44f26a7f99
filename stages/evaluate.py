"""Stage evaluate: every benchmark of the paper on the aligned evaluation sets.

Benchmarks whose data is present are scored with the reference procedures; the others are
listed as not available. Writes DVC metrics (benchmark -> metric -> value), a ROC curve per
benchmark (CSV for DVC plots, PNG), decision thresholds calibrated on the largest verification
protocol scored (``metrics/thresholds.json``), a markdown report with the published numbers
alongside, and logs all of it to the pipeline's MLflow run, with the ``evaluate`` params it used
and the evaluation sets as a dataset input (their DVC md5). ``--model`` takes the PyTorch backbone,
its ONNX export or an MLflow model URI (``models:/arcface@champion``); features are cached
per (model, dataset), so re-scoring does not re-embed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlflow

from arcflow.atomic import atomic_dir, atomic_file, write_csv, write_json
from arcflow.config import EvaluateParams
from arcflow.data.dataset_label import read_dataset_label
from arcflow.errors import DataFormatError
from arcflow.evaluate.cache import FeatureCache
from arcflow.evaluate.context import EvalContext
from arcflow.evaluate.embed import load_encoder
from arcflow.evaluate.report import (
    benchmark_document,
    markdown_report,
    metrics_document,
    roc_figure,
    roc_rows,
    thresholds_section,
)
from arcflow.evaluate.result import BenchmarkResult
from arcflow.evaluate.suite import BY_NAME, embed_all, run_suite, select
from arcflow.evaluate.thresholds import FORMAT_VERSION, Thresholds, calibrate_results
from arcflow.tracking.datasets import EVALUATION, log_dvc_input
from arcflow.tracking.run import resume_run
from arcflow.tracking.stage_params import log_stage_params
from arcflow.train import distributed
from stages.common import calibration_args, log, params, parser, run


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True, help="aligned evaluation folder")
    p.add_argument(
        "--model",
        required=True,
        help="backbone.pt, an .onnx export or an MLflow model URI (models:/arcface@champion)",
    )
    p.add_argument("--run", type=Path, help="mlflow_run.json from train (omit: no MLflow)")
    p.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    p.add_argument("--plots", type=Path, default=Path("plots/roc"), help="ROC csv + png per set")
    p.add_argument("--report", type=Path, default=Path("reports/evaluation.md"))
    calibration_args(p)
    args = p.parse_args()
    cfg = params(args, "evaluate", "tracking")
    if not args.data.is_dir():
        raise FileNotFoundError(2, "no such directory", str(args.data))
    benchmarks = select(cfg.evaluate.benchmarks)
    nproc = distributed.resolve_devices(cfg.evaluate.devices, cfg.evaluate.device)
    code = distributed.relaunch_under_torchrun(nproc, "stages.evaluate", sys.argv[1:])
    if code is not None:
        if code:
            raise SystemExit(code)
        return
    dist_ctx = distributed.init(cfg.evaluate.device)
    try:
        with tempfile.TemporaryDirectory(prefix="arcflow-features-") as scratch:
            cache_dir = cfg.evaluate.cache_dir or (scratch if dist_ctx.distributed else None)
            ctx = EvalContext(
                args.data,
                load_encoder(args.model, dist_ctx.device),
                batch_size=cfg.evaluate.batch_size,
                flip=cfg.evaluate.flip,
                cache=FeatureCache(cache_dir),
                device=dist_ctx.device.type,
                dist=dist_ctx,
            )
            if dist_ctx.distributed:  # every rank embeds its share; the main rank scores
                embed_all(ctx, benchmarks)
                if not dist_ctx.is_main:
                    return
                ctx.dist = distributed.DistContext(device=dist_ctx.device)  # scores alone
            evaluate(args, cfg, ctx, benchmarks)
    finally:
        distributed.shutdown()


def evaluate(args, cfg, ctx: EvalContext, benchmarks) -> None:
    """Score every benchmark, write the outputs, log to MLflow."""
    results = run_suite(ctx, cfg.evaluate, benchmarks)
    if all(result is None for result in results.values()):
        raise DataFormatError(
            f"{args.data}: no benchmark data (looked for {', '.join(BY_NAME)})",
            hint="run the align stage, or check evaluate.benchmarks",
        )
    log.info("evaluate: %d images embedded, %d from the cache", ctx.embedded, ctx.cached)
    thresholds = calibrate_results(results)
    log_thresholds(thresholds)
    titles = {b.name: b.title for b in benchmarks}
    report = markdown_report(
        results,
        titles,
        {b.name: b.headline for b in benchmarks},
        [f"model: {args.model}", f"{ctx.embedded} images embedded, {ctx.cached} cached"],
        sections=[thresholds_section(thresholds, titles)],
        dataset=read_dataset_label(args.data),
    )
    thresholds_doc = thresholds_document(thresholds)
    write_outputs(args, results, report, thresholds_doc)
    if args.run is not None:
        with resume_run(cfg.tracking, Path.cwd(), args.run):
            log_inputs(args.data, cfg.evaluate)
            log_to_mlflow(results, report, thresholds, thresholds_doc)


def thresholds_document(thresholds: Thresholds | None) -> dict[str, object]:
    """``thresholds.json``: the calibration, or ``set: null`` when nothing could be calibrated."""
    if thresholds is None:
        return {"format_version": FORMAT_VERSION, "set": None}
    return thresholds.to_dict()


def log_thresholds(thresholds: Thresholds | None) -> None:
    """One line naming the calibration set and what it resolves."""
    if thresholds is None:
        log.warning("evaluate: no verification protocol scored; no decision thresholds")
        return
    log.info(
        "evaluate: thresholds on %s (%d genuine, %d impostor): %s%s",
        thresholds.set_name,
        thresholds.n_genuine,
        thresholds.n_impostor,
        ", ".join(f"{k} {p.threshold:.4f}" for k, p in thresholds.points.items()) or "none",
        f"; unresolved {', '.join(thresholds.unresolved)}" if thresholds.unresolved else "",
    )


def details_document(results: dict[str, BenchmarkResult | None]) -> dict[str, object]:
    """``benchmark -> details`` (pairs, images, templates… as the benchmark counts them)."""
    return {name: dict(result.details) for name, result in results.items() if result is not None}


def write_outputs(
    args, results: dict[str, BenchmarkResult | None], report: str, thresholds: dict[str, object]
) -> None:
    """Metrics JSON, ROC csv + png per benchmark, thresholds, the markdown report; each atomic."""
    import matplotlib.pyplot as plt

    with atomic_dir(args.plots) as plots:
        for name, result in results.items():
            if result is None or result.roc is None:
                continue
            write_csv(plots / f"{name}.csv", ["fpr", "tpr"], roc_rows(*result.roc))
            fig = roc_figure({BY_NAME[name].title: result.roc}, f"{BY_NAME[name].title} ROC")
            fig.savefig(plots / f"{name}.png")
            plt.close(fig)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.report) as tmp:
        tmp.write_text(report, encoding="utf-8")
    write_json(args.thresholds, thresholds)
    write_json(args.eval_details, details_document(results))
    write_json(args.metrics, metrics_document(results))


def log_inputs(data: Path, evaluate_params: EvaluateParams) -> None:
    """Into the active run: the ``evaluate`` params used (a rerun's changed values as tags,
    :mod:`arcflow.tracking.stage_params`) and the evaluation sets as a dataset input."""
    changed = log_stage_params("evaluate", {"evaluate": evaluate_params.model_dump(mode="json")})
    if changed:
        log.info("evaluate: changed since the run's first evaluation: %s", ", ".join(changed))
    log_dvc_input(data, EVALUATION)


def log_to_mlflow(
    results,
    report: str,
    thresholds: Thresholds | None,
    thresholds_doc: dict[str, object],
) -> None:
    """Into the active run: metrics as ``eval.<benchmark>.<metric>``, the ROC figure, the
    report, and the thresholds (metrics ``thresholds.far_<FAR>``, tag ``thresholds.set``,
    artifact ``thresholds.json``)."""
    curves = {BY_NAME[n].title: r.roc for n, r in results.items() if r is not None and r.roc}
    for name, result in results.items():
        if result is None:
            mlflow.set_tag(f"eval.{name}", "not available")
            continue
        doc = benchmark_document(result)
        mlflow.log_metrics(
            {f"eval.{name}.{k}": v for k, v in doc.items() if not isinstance(v, str)}
        )
        mlflow.set_tags({f"eval.{name}.{k}": v for k, v in doc.items() if isinstance(v, str)})
    mlflow.log_figure(roc_figure(curves, "ROC, every benchmark"), "plots/roc.png")
    mlflow.log_text(report, "reports/evaluation.md")
    mlflow.log_text(json.dumps(thresholds_doc, indent=2, sort_keys=True) + "\n", "thresholds.json")
    if thresholds is not None:
        points = thresholds.points.items()
        mlflow.log_metrics({f"thresholds.{k}": p.threshold for k, p in points})
        mlflow.set_tags(
            {
                "thresholds.set": thresholds.set_name,
                "thresholds.n_genuine": str(thresholds.n_genuine),
                "thresholds.n_impostor": str(thresholds.n_impostor),
            }
        )


if __name__ == "__main__":
    run(main)
