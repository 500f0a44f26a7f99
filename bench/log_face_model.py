"""Logging the face model to an MLflow tracking server: what the export stage pays per model
when MLflow runs as a server with proxied S3 artifacts (the compose stack, the tests' stack).

PYTHONPATH=. python bench/log_face_model.py          # a local stack (moto + MLflow) of its own
PYTHONPATH=. python bench/log_face_model.py --repeats 5 --json out.json

A bundle around a randomly initialised ``--arch`` (ONNX, fp32) is logged ``--repeats`` times,
each in a run of its own; reported: the median seconds per ``log_face_model`` call and the
number of files the logged model holds (each one an upload through the server).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import machine
from bench.face_service import build_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="iresnet18")
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import mlflow

    from arcflow.serve.bundle import read_bundle
    from arcflow.serve.pyfunc import log_face_model
    from infra.local.stack import down, up

    with tempfile.TemporaryDirectory(prefix="log-face-model-") as tmp:
        bundle = build_bundle(args.arch, args.embedding_size, Path(tmp))
        stack = up(Path(tmp) / "stack")
        try:
            mlflow.set_tracking_uri(stack.mlflow_url)
            mlflow.set_experiment("log-face-model-bench")
            seconds = []
            for _ in range(args.repeats):
                with mlflow.start_run():
                    start = time.perf_counter()
                    info = log_face_model(bundle, read_bundle(bundle), name="arcface")
                    seconds.append(time.perf_counter() - start)
            downloaded = Path(tmp) / "downloaded"
            downloaded.mkdir()
            local = Path(
                mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(downloaded))
            )
            files = sum(1 for p in local.rglob("*") if p.is_file())
        finally:
            down(Path(tmp) / "stack")
    result = {
        "machine": machine("cpu"),
        "arch": args.arch,
        "repeats": args.repeats,
        "seconds_median": round(statistics.median(seconds), 2),
        "files_in_model": files,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
