"""Stage export: ONNX export of the trained backbone, checked against PyTorch.

The model records its input/output contract in its metadata and passes ``onnx.checker``.
Fails (and writes no ONNX file) if ONNX Runtime disagrees with PyTorch on random inputs or
on real aligned crops (``--data``) beyond ``export.atol`` / ``export.min_cosine``; measures
ONNX Runtime against PyTorch eager (latency at batch 1, throughput at ``throughput_batch``)
and logs the model into the pipeline's MLflow run, with what ``arcflow promote`` judges it on:
the benchmark metrics (``--eval-metrics``), parity and speed as the model's metrics, and its
provenance (git commit, params hash, DVC data version) as its params and tags.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np

from arcflow.atomic import atomic_file, write_json
from arcflow.config import read_params_file
from arcflow.data.binpairs import load_bin
from arcflow.errors import DataFormatError
from arcflow.evaluate.embed import to_batch
from arcflow.export.mlflow_model import flat_metrics, log_onnx_model
from arcflow.export.onnx import check_parity, export_onnx, measure_speed
from arcflow.models.saving import load_backbone
from arcflow.tracking.provenance import data_version, data_versions, git_commit, params_hash
from arcflow.tracking.run import resume_run
from stages.common import log, params, parser, run, trained_model_args

HASHED_SECTIONS = ("data", "align", "train", "evaluate", "export")  # what made model + metrics


def real_inputs(data: Path | None, count: int) -> np.ndarray | None:
    """The first ``count`` aligned crops of the ``.bin`` sets in ``data``, normalised NCHW."""
    if data is None or count == 0:
        return None
    images: list[bytes] = []
    for path in sorted(data.glob("*.bin")):
        images += load_bin(path).images[: count - len(images)]
        if len(images) >= count:
            break
    if not images:
        raise DataFormatError(f"{data}: no .bin pair set to take real crops from")
    return to_batch(images, str(data))


def provenance(params_file: Path, lock: Path) -> dict[str, str]:
    """git commit, params hash and DVC data version: recorded on the logged model."""
    versions = data_versions(lock)
    return {
        "git_commit": git_commit(),
        "params_hash": params_hash(read_params_file(params_file), HASHED_SECTIONS),
        "data_version": data_version(versions),
        **{f"data.{path}": md5 for path, md5 in versions.items()},
    }


def export_fp16(model, out: Path, cfg, metadata: dict, real: np.ndarray | None) -> dict:
    """The float16 variant, gated on cosine with PyTorch float32; its parity and ORT speed."""
    with atomic_file(out) as tmp:
        export_onnx(model, tmp, opset=cfg.opset, metadata=metadata, half=True)
        parity = check_parity(
            model,
            tmp,
            batch=cfg.parity_batch,
            atol=float("inf"),  # float16's absolute error is not float32's: cosine decides
            min_cosine=cfg.fp16_min_cosine,
            real=real,
        )
        speed = measure_speed(model, tmp, runs=cfg.latency_runs, batch=cfg.throughput_batch)
    kept = ("min_cosine", "max_abs_diff", "onnx_latency_ms_median", "onnx_latency_ms_p90")
    report = {f"fp16_{k}": v for k, v in {**parity, **speed}.items() if k in kept}
    report[f"fp16_onnx_images_per_s_b{cfg.throughput_batch}"] = speed[
        f"onnx_images_per_s_b{cfg.throughput_batch}"
    ]
    return report


def read_eval_metrics(path: Path) -> dict:
    """The evaluate stage's metrics document; empty (the model cannot be promoted) if absent."""
    if not path.exists():
        log.warning("export: %s not found: the logged model has no benchmark metrics", path)
        return {}
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise DataFormatError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise DataFormatError(f"{path}: expected an object of benchmark -> metrics")
    return document


def main() -> None:
    p = parser(__doc__)
    trained_model_args(p)
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--data", type=Path, help="aligned evaluation folder: real crops for parity")
    p.add_argument(
        "--out-fp16",
        type=Path,
        help="also write a float16 variant here (same float32 interface; export.fp16_min_cosine)",
    )
    p.add_argument("--metrics", type=Path, default=Path("metrics/export.json"))
    p.add_argument(
        "--model-info", type=Path, default=Path("models/onnx_model.json"), help="MLflow model URI"
    )
    p.add_argument(
        "--eval-metrics",
        type=Path,
        default=Path("metrics/eval.json"),
        help="benchmark metrics (evaluate stage), recorded on the logged model for promotion",
    )
    p.add_argument("--dvc-lock", type=Path, default=Path("dvc.lock"), help="data versions")
    args = p.parse_args()
    loaded = params(args, "export", "tracking")
    cfg = loaded.export
    model = load_backbone(args.model)
    real = real_inputs(args.data, cfg.parity_real)
    metadata = {"producer": "arcflow", "backbone": args.model.name}
    with atomic_file(args.out) as tmp:
        export_onnx(model, tmp, opset=cfg.opset, metadata=metadata)
        parity = check_parity(
            model, tmp, batch=cfg.parity_batch, atol=cfg.atol, min_cosine=cfg.min_cosine, real=real
        )
        speed = measure_speed(model, tmp, runs=cfg.latency_runs, batch=cfg.throughput_batch)
        report = {**parity, **speed, "opset": cfg.opset}
        if args.out_fp16 is not None:  # inside: a failed fp16 gate leaves no fp32 file either
            report |= export_fp16(model, args.out_fp16, cfg, metadata, real)
    write_json(args.metrics, report)
    export_metrics = flat_metrics("export", report)
    model_metrics = {**flat_metrics("eval", read_eval_metrics(args.eval_metrics)), **export_metrics}
    with resume_run(loaded.tracking, Path.cwd(), args.run):
        mlflow.log_metrics(export_metrics)
        info = log_onnx_model(
            args.out,
            real,
            params=provenance(args.params, args.dvc_lock),
            metrics=model_metrics,
        )
    write_json(args.model_info, {"model_uri": info.model_uri, "model_id": info.model_id})
    log.info(
        "export: %s, max |onnx - torch| = %.2e over %d random + %d real inputs, "
        "%.1f ms/img (PyTorch %.1f)",
        args.out,
        parity["max_abs_diff"],
        cfg.parity_batch,
        parity["parity_real"],
        speed["onnx_latency_ms_median"],
        speed["torch_latency_ms_median"],
    )


if __name__ == "__main__":
    run(main)
