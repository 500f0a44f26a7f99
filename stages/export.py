"""Stage export: ONNX export of the trained backbone, checked against PyTorch.

The model records its input/output contract in its metadata and passes ``onnx.checker``.
Fails (and writes no ONNX file) if ONNX Runtime disagrees with PyTorch on random inputs or
on real aligned crops (``--data``) beyond ``export.atol`` / ``export.min_cosine``; measures
ONNX Runtime against PyTorch eager (latency at batch 1, throughput at ``throughput_batch``)
and logs the model file, parity and speed into the pipeline's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

from arcflow.atomic import atomic_file, write_json
from arcflow.data.binpairs import load_bin
from arcflow.errors import DataFormatError
from arcflow.evaluate.embed import to_batch
from arcflow.export.onnx import (
    INPUT_NAME,
    check_parity,
    export_onnx,
    measure_speed,
    ort_session,
    read_metadata,
)
from arcflow.models.saving import load_backbone
from arcflow.tracking.run import resume_run
from stages.common import log, params, parser, run, trained_model_args


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


def log_onnx_model(path: Path, real: np.ndarray | None):
    """``mlflow.onnx.log_model`` into the active run, with signature and an input example."""
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature

    example = real[:1] if real is not None else np.zeros((1, 3, 112, 112), np.float32)
    output = ort_session(path).run(None, {INPUT_NAME: example})[0]
    return mlflow.onnx.log_model(
        onnx.load(str(path)),
        name="arcface",
        signature=infer_signature(example, output),
        input_example=example,
        metadata=read_metadata(path),
        save_as_external_data=False,
    )


def main() -> None:
    p = parser(__doc__)
    trained_model_args(p)
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--data", type=Path, help="aligned evaluation folder: real crops for parity")
    p.add_argument("--metrics", type=Path, default=Path("metrics/export.json"))
    p.add_argument(
        "--model-info", type=Path, default=Path("models/onnx_model.json"), help="MLflow model URI"
    )
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
    write_json(args.metrics, report)
    with resume_run(loaded.tracking, Path.cwd(), args.run):
        mlflow.log_metrics({f"export.{k}": float(v) for k, v in report.items()})
        info = log_onnx_model(args.out, real)
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
