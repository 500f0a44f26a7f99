"""Stage export: ONNX export of the trained backbone, checked against PyTorch.

Fails (and writes no ONNX file) if ONNX Runtime disagrees with PyTorch beyond
``export.atol``; logs the model file, parity and latency into the pipeline's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from arcflow.atomic import atomic_file, write_json
from arcflow.export.onnx import check_parity, export_onnx, measure_latency
from arcflow.models.saving import load_backbone
from arcflow.tracking.run import resume_run
from stages.common import log, params, parser, run, trained_model_args


def main() -> None:
    p = parser(__doc__)
    trained_model_args(p)
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--metrics", type=Path, default=Path("metrics/export.json"))
    args = p.parse_args()
    cfg = params(args, "export", "tracking")
    model = load_backbone(args.model)
    with atomic_file(args.out) as tmp:
        export_onnx(model, tmp, opset=cfg.export.opset)
        parity = check_parity(model, tmp, batch=cfg.export.parity_batch, atol=cfg.export.atol)
        latency = measure_latency(tmp, runs=cfg.export.latency_runs)
    report = {**parity, **latency, "opset": cfg.export.opset}
    write_json(args.metrics, report)
    with resume_run(cfg.tracking, Path.cwd(), args.run):
        mlflow.log_metrics({f"export.{k}": float(v) for k, v in report.items()})
        mlflow.log_artifact(str(args.out), artifact_path="onnx")
    log.info(
        "export: %s, max |onnx - torch| = %.2e, %.1f ms/img",
        args.out,
        parity["max_abs_diff"],
        latency["latency_ms_median"],
    )


if __name__ == "__main__":
    run(main)
