"""Stage train: train the backbone with a margin head on the aligned RecordIO dataset.

Opens the pipeline's MLflow run (its id goes to ``<out>/mlflow_run.json`` for the later
stages), logs params and per-step loss/lr/throughput, saves ``<out>/backbone.pt``, and
writes DVC metrics and a loss plot.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow

from arcflow.atomic import write_csv, write_json
from arcflow.config import read_params_file
from arcflow.data.faces import AlignedFaceDataset
from arcflow.data.transforms import train_augmentation
from arcflow.models.saving import save_backbone
from arcflow.tracking.run import flatten, start_run
from arcflow.train.loop import train_model
from stages.common import log, params, parser, run


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True, help="aligned dataset directory")
    p.add_argument("--out", type=Path, required=True, help="model output directory")
    p.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    p.add_argument("--plot", type=Path, default=Path("plots/train_loss.csv"))
    args = p.parse_args()
    cfg = params(args, "train", "tracking")
    train_cfg = cfg.train
    dataset = AlignedFaceDataset(args.data, augment=train_augmentation())
    log.info(
        "train: %d images of %d identities, %s x%.2f + %s",
        len(dataset),
        dataset.num_classes,
        train_cfg.backbone,
        train_cfg.width,
        train_cfg.head,
    )
    root = Path.cwd()
    tags = {"arcflow.stage": "train", "arcflow.git_sha": _git_sha()}
    with start_run(
        cfg.tracking, root, args.out / "mlflow_run.json", run_name="pipeline", tags=tags
    ) as mlrun:
        mlflow.log_params(flatten("", read_params_file(args.params)))
        mlflow.log_params({"dataset.images": len(dataset), "dataset.classes": dataset.num_classes})
        result = train_model(
            train_cfg,
            dataset,
            dataset.num_classes,
            log=lambda step, row: mlflow.log_metrics(
                {f"train.{k}": v for k, v in row.items() if k != "step"}, step=step
            ),
        )
        save_backbone(
            args.out / "backbone.pt", result.backbone, train_cfg.backbone, result.backbone_kwargs
        )
        last = result.history[-1]
        metrics = {
            "final_loss": last["loss"],
            "images_per_second": result.images_per_second,
            "steps": int(last["step"]),
        }
        write_json(args.metrics, metrics)
        write_csv(
            args.plot,
            ["step", "epoch", "loss", "lr"],
            [[int(r["step"]), r["epoch"], r["loss"], r["lr"]] for r in result.history],
        )
        mlflow.log_metrics({f"train.{k}": float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(args.plot), artifact_path="plots")
        log.info(
            "train: loss %.3f, %.0f img/s, MLflow run %s",
            last["loss"],
            result.images_per_second,
            mlrun.info.run_id,
        )


if __name__ == "__main__":
    run(main)
