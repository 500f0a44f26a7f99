"""Stage export: ONNX export of the trained backbone, checked against PyTorch.

The model records its input/output contract in its metadata and passes ``onnx.checker``.
Fails (and writes no ONNX file) if ONNX Runtime disagrees with PyTorch on random inputs or
on real aligned crops (``--data``) beyond ``export.atol`` / ``export.min_cosine``; measures
ONNX Runtime against PyTorch eager (latency at batch 1, throughput at ``throughput_batch``)
and packs the face service (``--bundle``: the ONNX backbones, the detector, the calibrated
thresholds, the model card; :mod:`arcflow.serve`). The bundle is logged into the pipeline's
MLflow run as the pyfunc model ``arcface`` (what ``models:/arcface@champion`` loads and
``mlflow models serve`` serves), with what ``arcflow promote`` judges it on: the benchmark
metrics (``--eval-metrics``, linked to the evaluation sets' DVC version), parity and speed as the
model's metrics, and its provenance (git commit and whether the tree was dirty, params hash, DVC
data version) as its params and tags. The ``export``, ``serve`` and ``registry.model_name``
params it used go into the run (:mod:`arcflow.tracking.stage_params`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np

from arcflow.atomic import atomic_file, write_json
from arcflow.config import read_params_file
from arcflow.data.binpairs import load_bin
from arcflow.errors import DataFormatError
from arcflow.evaluate.embed import to_batch
from arcflow.evaluate.suite import BENCHMARKS
from arcflow.export.mlflow_model import ARTIFACT_NAME, flat_metrics
from arcflow.export.onnx import (
    check_parity,
    export_onnx,
    measure_onnx_speed,
    measure_speed,
    ort_session,
    to_float16,
)
from arcflow.imports.model_import import ImportRecord
from arcflow.models.saving import load_backbone
from arcflow.serve.card import CardInputs, model_card
from arcflow.serve.package import CARD, write_bundle
from arcflow.serve.pyfunc import log_face_model
from arcflow.tracking.datasets import dvc_dataset
from arcflow.tracking.provenance import data_version, data_versions, git_state, params_hash
from arcflow.tracking.run import resume_run
from arcflow.tracking.stage_params import log_stage_params
from stages.common import calibration_args, log, params, parser, run, trained_model_args

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


def provenance(params_file: Path, lock: Path, origin: ImportRecord | None) -> dict[str, str]:
    """git commit (``git_dirty``: tracked files differed from it), params hash and DVC data
    version (an imported model: where it came from): recorded on the logged model."""
    git = git_state(lock=lock)
    common = {
        "git_commit": git.commit,
        "git_dirty": "unknown" if git.dirty is None else str(git.dirty).lower(),
        "params_hash": params_hash(read_params_file(params_file), HASHED_SECTIONS),
    }
    if origin is not None:
        kept = ("source", "sha256", "format", "architecture", "stored_dtype", "license")
        return common | {f"import.{key}": str(getattr(origin, key)) for key in kept}
    versions = data_versions(lock)
    return common | {
        "data_version": data_version(versions),
        **{f"data.{path}": md5 for path, md5 in versions.items()},
    }


def log_params(loaded) -> None:
    """Into the active run: the sections this stage used (a rerun's changed values as tags)."""
    sections = {
        "export": loaded.export.model_dump(mode="json"),
        "serve": loaded.serve.model_dump(mode="json"),
        "registry": {"model_name": loaded.registry.model_name},
    }
    changed = log_stage_params("export", sections)
    if changed:
        log.info("export: changed since the run's first export: %s", ", ".join(changed))


def model_source(path: Path) -> tuple[ImportRecord | None, Path]:
    """``--model``: a trained backbone.pt (no import record) or an imported model folder."""
    if not path.is_dir():
        return None, path
    from arcflow.imports.folder import imported_model

    return imported_model(path)


def export_torch(model, args, cfg, real: np.ndarray | None) -> dict:
    """ONNX (and its fp16 variant) of a PyTorch backbone, gated on parity; parity and speed."""
    metadata = {"producer": "arcflow", "backbone": args.model.name}
    with atomic_file(args.out) as tmp:
        export_onnx(model, tmp, opset=cfg.opset, metadata=metadata)
        parity = check_parity(
            model, tmp, batch=cfg.parity_batch, atol=cfg.atol, min_cosine=cfg.min_cosine, real=real
        )
        speed = measure_speed(model, tmp, runs=cfg.latency_runs, batch=cfg.throughput_batch)
        report = {**parity, **speed, "opset": cfg.opset}
        if args.out_fp16 is not None:  # inside: a failed fp16 gate leaves no fp32 file either
            report |= export_fp16(model, tmp, args.out_fp16, cfg, metadata, real)
    return report


def adopt_onnx(origin: ImportRecord, weights: Path, args, cfg) -> dict:
    """An imported ONNX model: its canonical graph as is, with the parity measured at import
    (canonical graph vs the source graph under its own conventions) and its speed."""
    if args.out_fp16 is not None:
        raise DataFormatError(
            f"{args.model}: no float16 variant of an imported ONNX model", hint="drop --out-fp16"
        )
    parity = dict(origin.parity or {})
    if not {"max_abs_diff", "min_cosine"} <= set(parity):
        raise DataFormatError(f"{args.model}: import.json has no parity record: import it again")
    with atomic_file(args.out) as tmp:
        shutil.copyfile(weights, tmp)
        speed = measure_onnx_speed(tmp, runs=cfg.latency_runs, batch=cfg.throughput_batch)
    return {**parity, **speed}


def export_fp16(model, fp32: Path, out: Path, cfg, metadata: dict, real: np.ndarray | None) -> dict:
    """The float16 variant of the ``fp32`` export, gated on cosine with PyTorch float32; its
    parity and ORT speed."""
    with atomic_file(out) as tmp:
        to_float16(fp32, tmp, metadata)
        parity = check_parity(
            model,
            tmp,
            batch=cfg.parity_batch,
            atol=float("inf"),  # float16's absolute error is not float32's: cosine decides
            min_cosine=cfg.fp16_min_cosine,
            real=real,
        )
        speed = measure_onnx_speed(tmp, runs=cfg.latency_runs, batch=cfg.throughput_batch)
    kept = ("min_cosine", "max_abs_diff", "onnx_latency_ms_median", "onnx_latency_ms_p90")
    report = {f"fp16_{k}": v for k, v in {**parity, **speed}.items() if k in kept}
    report[f"fp16_onnx_images_per_s_b{cfg.throughput_batch}"] = speed[
        f"onnx_images_per_s_b{cfg.throughput_batch}"
    ]
    return report


def read_document(path: Path, what: str) -> dict:
    """A JSON object the evaluate stage wrote; empty (with a warning) if absent."""
    if not path.exists():
        log.warning("export: %s not found: the logged model has no %s", path, what)
        return {}
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise DataFormatError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise DataFormatError(f"{path}: expected a JSON object ({what})")
    return document


def card_inputs(
    loaded, args, evaluation: dict, thresholds: dict, prov: dict, origin: ImportRecord | None
) -> CardInputs:
    """What the model card states, from the params (or the import record) and the evaluate
    stage's documents."""
    source = loaded.align.source
    spec = loaded.data.sources.get(source)
    uri = spec.uri if spec is not None else "unknown"
    return CardInputs(
        name=loaded.registry.model_name,
        train=loaded.train.model_dump(),
        data_source=f"{source} ({uri})",
        synthetic=uri.startswith("synthetic://") and origin is None,
        metrics=evaluation,
        headlines={b.name: (b.title, b.headline) for b in BENCHMARKS},
        sizes=read_document(args.eval_details, "benchmark set sizes"),
        thresholds=thresholds or None,
        provenance=prov,
        run_id=json.loads(args.run.read_text()).get("run_id", "unknown"),
        detector=loaded.serve.detector,
        origin=None if origin is None else asdict(origin),
    )


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
    calibration_args(p)
    p.add_argument(
        "--bundle", type=Path, default=Path("models/face_model"), help="face service folder"
    )
    args = p.parse_args()
    loaded = params(args, "data", "align", "train", "export", "serve", "registry", "tracking")
    cfg = loaded.export
    origin, weights = model_source(args.model)
    if origin is not None and origin.format == "onnx":
        report = adopt_onnx(origin, weights, args, cfg)
    else:
        report = export_torch(
            load_backbone(weights), args, cfg, real_inputs(args.data, cfg.parity_real)
        )
    evaluation = read_document(args.eval_metrics, "benchmark metrics")
    thresholds = read_document(args.thresholds, "decision thresholds")
    thresholds = thresholds if thresholds.get("set") else {}  # set null: nothing calibrated
    prov = provenance(args.params, args.dvc_lock, origin)
    card = model_card(card_inputs(loaded, args, evaluation, thresholds, prov, origin))
    bundle = write_bundle(
        args.bundle,
        backbone=args.out,
        backbone_fp16=args.out_fp16,
        embedding_size=int(ort_session(args.out).get_outputs()[0].shape[-1]),
        serve=loaded.serve,
        align=loaded.align,
        thresholds=thresholds,
        card=card,
    )
    write_json(args.metrics, report)
    export_metrics = flat_metrics("export", report)
    evaluated = dvc_dataset(args.data, args.dvc_lock) if args.data is not None else None
    with resume_run(loaded.tracking, Path.cwd(), args.run):
        log_params(loaded)
        mlflow.log_metrics(export_metrics)
        mlflow.log_text(card, CARD)
        info = log_face_model(
            args.bundle,
            bundle,
            name=ARTIFACT_NAME,
            params=prov,
            tags={f"arcflow.{key}": value for key, value in prov.items()},
            metadata={"input": "photos (encoded images); see arcflow/serve/pyfunc.py"},
        )
        mlflow.log_metrics(export_metrics, model_id=info.model_id)
        if eval_metrics := flat_metrics("eval", evaluation):
            mlflow.log_metrics(  # measured on the evaluation sets: linked to their DVC version
                eval_metrics,
                model_id=info.model_id,
                dataset=evaluated[0] if evaluated is not None else None,
            )
    write_json(args.model_info, {"model_uri": info.model_uri, "model_id": info.model_id})
    log.info(
        "export: %s, max |onnx - source| = %.2e, %.1f ms/img (PyTorch %s)",
        args.out,
        report["max_abs_diff"],
        report["onnx_latency_ms_median"],
        f"{report['torch_latency_ms_median']:.1f}" if "torch_latency_ms_median" in report else "–",
    )


if __name__ == "__main__":
    run(main)
