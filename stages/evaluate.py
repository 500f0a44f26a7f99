"""Stage evaluate: every benchmark of the paper on the aligned evaluation sets.

Benchmarks whose data is present are scored with the reference procedures; the others are
listed as not available. Writes DVC metrics (benchmark -> metric -> value), a ROC curve per
benchmark (CSV for DVC plots, PNG), a markdown report with the published numbers alongside,
and logs all of it to the pipeline's MLflow run. ``--model`` takes the PyTorch backbone,
its ONNX export or an MLflow model URI (``models:/arcface@champion``); features are cached
per (model, dataset), so re-scoring does not re-embed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import mlflow

from arcflow.atomic import atomic_dir, atomic_file, write_csv, write_json
from arcflow.errors import DataFormatError
from arcflow.evaluate.cache import FeatureCache
from arcflow.evaluate.context import EvalContext
from arcflow.evaluate.embed import load_encoder
from arcflow.evaluate.report import markdown_report, metrics_document, roc_figure, roc_rows
from arcflow.evaluate.result import BenchmarkResult
from arcflow.evaluate.suite import BY_NAME, embed_all, run_suite, select
from arcflow.tracking.run import resume_run
from arcflow.train import distributed
from stages.common import log, params, parser, run


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
    report = markdown_report(
        results,
        {b.name: b.title for b in benchmarks},
        {b.name: b.headline for b in benchmarks},
        [f"model: {args.model}", f"{ctx.embedded} images embedded, {ctx.cached} cached"],
    )
    write_outputs(args, results, report)
    if args.run is not None:
        log_to_mlflow(cfg.tracking, args.run, results, report)


def write_outputs(args, results: dict[str, BenchmarkResult | None], report: str) -> None:
    """Metrics JSON, ROC csv + png per benchmark, the markdown report; each atomic."""
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
    write_json(args.metrics, metrics_document(results))


def log_to_mlflow(tracking, run_file: Path, results, report: str) -> None:
    """Metrics as ``eval.<benchmark>.<metric>``, the ROC figure and the report."""
    curves = {BY_NAME[n].title: r.roc for n, r in results.items() if r is not None and r.roc}
    with resume_run(tracking, Path.cwd(), run_file):
        for name, result in results.items():
            if result is None:
                mlflow.set_tag(f"eval.{name}", "not available")
                continue
            mlflow.log_metrics({f"eval.{name}.{k}": float(v) for k, v in result.metrics.items()})
        mlflow.log_figure(roc_figure(curves, "ROC, every benchmark"), "plots/roc.png")
        mlflow.log_text(report, "reports/evaluation.md")


if __name__ == "__main__":
    run(main)
