"""Stage evaluate: 10-fold verification on every .bin pair set of the aligned dataset.

Writes DVC metrics (accuracy ± std, VAL@FAR, AUC per set), ROC curves as DVC plots and as
an image in the pipeline's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

from arcflow.atomic import write_csv, write_json
from arcflow.data.binpairs import load_bin
from arcflow.devices import resolve_device
from arcflow.errors import DataFormatError
from arcflow.evaluate.embed import embed_crops
from arcflow.evaluate.report import roc_figure, roc_rows
from arcflow.evaluate.verification import evaluate_pairs, pair_distances, roc_curve
from arcflow.models.saving import load_backbone
from arcflow.tracking.run import resume_run
from stages.common import log, params, parser, run, trained_model_args


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True, help="directory holding *.bin pair sets")
    trained_model_args(p)
    p.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    p.add_argument("--plots", type=Path, default=Path("plots/roc"), help="ROC csv per set")
    args = p.parse_args()
    cfg = params(args, "evaluate", "tracking")
    bins = sorted(args.data.glob("*.bin"))
    if not bins:
        raise DataFormatError(f"{args.data}: no .bin pair sets to evaluate")
    model = load_backbone(args.model)
    device = resolve_device("auto")
    metrics: dict[str, dict[str, float]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in bins:
        pairs = load_bin(path)
        emb = embed_crops(
            model,
            pairs.images,
            batch_size=cfg.evaluate.batch_size,
            flip=cfg.evaluate.flip,
            device=device,
            desc=path.stem,
        )
        result = evaluate_pairs(
            emb, pairs.issame, n_folds=cfg.evaluate.n_folds, far_target=cfg.evaluate.far_target
        )
        values = {k: v for k, v in result.to_dict().items() if not isinstance(v, list)}
        metrics[path.stem] = {**values, "threshold": float(np.mean(result.best_thresholds))}
        fpr, tpr, _ = roc_curve(pair_distances(emb), pairs.issame)
        curves[path.stem] = (fpr, tpr)
        write_csv(args.plots / f"{path.stem}.csv", ["fpr", "tpr"], roc_rows(fpr, tpr))
        log.info(
            "evaluate: %s accuracy %.4f ± %.4f", path.stem, result.accuracy, result.accuracy_std
        )
    write_json(args.metrics, metrics)
    with resume_run(cfg.tracking, Path.cwd(), args.run):
        for name, values in metrics.items():
            mlflow.log_metrics({f"eval.{name}.{k}": float(v) for k, v in values.items()})
        mlflow.log_figure(roc_figure(curves), "plots/roc.png")


if __name__ == "__main__":
    run(main)
