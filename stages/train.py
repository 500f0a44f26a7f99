"""Stage train: train the backbone with a margin head on the aligned RecordIO dataset.

With ``train.devices`` > 1 the stage relaunches itself under torchrun (DDP: NCCL on GPUs,
gloo on CPU). Checkpoints go to ``--checkpoints`` every ``train.checkpoint_every`` steps; a
rerun of the same run (same params and data) resumes from the last one, into the same MLflow
run. The main process logs its params (``data``, ``align``, ``train``), the training set as a
dataset input (its DVC md5), and per-step loss/lr/throughput to MLflow, verifies on the
``--val`` .bin sets every ``train.val_every`` steps (MLflow ``val.<set>``, ``--val-plot``),
saves ``<out>/backbone.pt`` and ``<out>/mlflow_run.json`` (for the later stages), and writes
DVC metrics and plots; the checkpoints are removed once the model is saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import torch.distributed as dist
from torch import nn

from arcflow.atomic import write_csv, write_json
from arcflow.data.binpairs import load_bin
from arcflow.data.faces import AlignedFaceDataset
from arcflow.data.transforms import train_augmentation
from arcflow.errors import DataFormatError
from arcflow.evaluate.embed import embed_crops
from arcflow.evaluate.verification import evaluate_pairs
from arcflow.models.saving import save_backbone
from arcflow.tracking.datasets import TRAINING, log_dvc_input
from arcflow.tracking.provenance import dvc_experiment_tags, git_state
from arcflow.tracking.run import start_run
from arcflow.tracking.stage_params import log_stage_params
from arcflow.train import distributed
from arcflow.train.loop import TrainResult, precision_name, train_model
from stages.common import log, params, parser, run

UPSTREAM = ("data", "align", "train")  # the params sections logged by this stage


def run_fingerprint(train_params: dict, data: Path, world_size: int) -> str:
    """Identifies a run: its train params, its data (index file and sizes), its world size."""
    digest = hashlib.sha256(json.dumps([train_params, world_size], sort_keys=True).encode())
    for name in ("train.idx", "property"):
        digest.update((data / name).read_bytes())
    digest.update(str((data / "train.rec").stat().st_size).encode())
    return digest.hexdigest()


def _metric_name(key: str) -> str:
    return key if key.startswith("val.") else f"train.{key}"


def verifier(folder: Path, device, flip: bool = True) -> Callable[[nn.Module], dict[str, float]]:
    """Accuracy on every .bin pair set of ``folder`` (insightface's 10-fold procedure), with
    the flip test unless ``flip`` is False (a cheaper monitor: half the forward passes)."""
    sets = {path.stem: load_bin(path) for path in sorted(folder.glob("*.bin"))}
    if not sets:
        raise DataFormatError(f"{folder}: no .bin pair sets to verify on")

    def validate(backbone: nn.Module) -> dict[str, float]:
        accuracy = {}
        for name, pairs in sets.items():
            emb = embed_crops(
                backbone, pairs.images, batch_size=64, flip=flip, device=device, desc=name
            )
            accuracy[name] = evaluate_pairs(emb, np.asarray(pairs.issame)).accuracy
        return accuracy

    return validate


def log_params(cfg, dataset: AlignedFaceDataset) -> None:
    """The sections that made the model (the data's too) and the training set's size."""
    sections = {name: getattr(cfg, name).model_dump(mode="json") for name in UPSTREAM}
    sizes = {"images": len(dataset), "classes": dataset.num_classes}
    changed = log_stage_params("train", {**sections, "dataset": sizes})
    if changed:
        log.warning("train: resumed run logged with other values: %s", ", ".join(changed))


def write_outputs(args, cfg, result: TrainResult) -> dict[str, float]:
    """backbone.pt, the metrics file and the loss plot; returns the metrics."""
    save_backbone(args.out / "backbone.pt", result.backbone, cfg.backbone, result.backbone_kwargs)
    last = result.history[-1]
    metrics = {
        "final_loss": last["loss"],
        "images_per_second": result.images_per_second,
        "steps": int(last["step"]),
    }
    if result.validation:
        names = [k for k in result.validation[0] if k != "step"]
        rows = [[int(r["step"]), *(r[n] for n in names)] for r in result.validation]
        write_csv(args.val_plot, ["step", *names], rows)
        metrics.update({f"val_{n}": result.validation[-1][n] for n in names})
    write_json(args.metrics, metrics)
    write_csv(
        args.plot,
        ["step", "epoch", "loss", "lr"],
        [[int(r["step"]), r["epoch"], r["loss"], r["lr"]] for r in result.history],
    )
    return metrics


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True, help="aligned dataset directory")
    p.add_argument("--out", type=Path, required=True, help="model output directory")
    p.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    p.add_argument("--plot", type=Path, default=Path("plots/train_loss.csv"))
    p.add_argument(
        "--checkpoints", type=Path, default=Path("checkpoints/train"), help="resumable state"
    )
    p.add_argument("--val", type=Path, help="folder of .bin pair sets to verify on while training")
    p.add_argument("--val-plot", type=Path, default=Path("plots/train_val.csv"))
    args = p.parse_args()
    cfg = params(args, "data", "align", "train", "tracking")
    train_cfg = cfg.train
    nproc = distributed.resolve_devices(train_cfg.devices, train_cfg.device)
    code = distributed.relaunch_under_torchrun(nproc, "stages.train", sys.argv[1:])
    if code is not None:
        if code:
            raise SystemExit(code)
        return
    ctx = distributed.init(train_cfg.device)
    try:
        augment = train_augmentation(**train_cfg.augment.model_dump())
        dataset = AlignedFaceDataset(args.data, augment=augment)
        if dataset.preload(train_cfg.preload_mb * 2**20) and ctx.is_main:
            log.info("train: %d crops decoded into memory once", len(dataset))
        fingerprint = run_fingerprint(train_cfg.model_dump(mode="json"), args.data, ctx.world_size)
        precision = precision_name(train_cfg, ctx.device)
        if ctx.is_main:
            log.info(
                "train: %d images of %d identities, %s x%.2f + %s, %d process(es) on %s (%s)",
                len(dataset),
                dataset.num_classes,
                train_cfg.backbone,
                train_cfg.width,
                train_cfg.head,
                ctx.world_size,
                ctx.device,
                precision,
            )
        tags = {
            "arcflow.stage": "train",
            "arcflow.precision": precision,
            **git_state().tags(),
            **dvc_experiment_tags(),
        }
        tracking = (
            start_run(
                cfg.tracking,
                Path.cwd(),
                args.out / "mlflow_run.json",
                run_name="pipeline",
                tags=tags,
                resume_file=args.checkpoints / "mlflow_run.json",
                resume_key=fingerprint,  # a checkpoint of this very run: its MLflow run too
                system_metrics=True,
            )
            if ctx.is_main
            else contextlib.nullcontext()
        )
        with tracking as mlrun:
            if ctx.is_main:
                log_params(cfg, dataset)
                log_dvc_input(args.data, TRAINING)
            result = train_model(
                train_cfg,
                dataset,
                dataset.num_classes,
                ctx=ctx,
                checkpoints=args.checkpoints,
                fingerprint=fingerprint,
                log=lambda step, row: mlflow.log_metrics(
                    {_metric_name(k): v for k, v in row.items() if k != "step"}, step=step
                ),
                validate=verifier(args.val, ctx.device, train_cfg.val_flip) if args.val else None,
            )
            if result.resumed_from and ctx.is_main:
                log.info("train: resumed from the checkpoint of step %d", result.resumed_from)
            if ctx.is_main:
                metrics = write_outputs(args, train_cfg, result)
                mlflow.log_metrics({f"train.{k}": float(v) for k, v in metrics.items()})
                mlflow.log_artifact(str(args.plot), artifact_path="plots")
                log.info(
                    "train: loss %.3f, %.0f img/s, MLflow run %s",
                    metrics["final_loss"],
                    metrics["images_per_second"],
                    mlrun.info.run_id,
                )
        if ctx.distributed:
            dist.barrier()
        if ctx.is_main:
            shutil.rmtree(args.checkpoints, ignore_errors=True)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run(main)
