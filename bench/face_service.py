"""Face service speed: the pyfunc in process (split into decode / detect / align / embed) and
the same photo through ``mlflow models serve`` (REST p50 / p99, overhead over in process).

PYTHONPATH=. python bench/face_service.py                          # models/face_model (dvc repro)
PYTHONPATH=. python bench/face_service.py --arch iresnet100 --embedding-size 512   # the paper's
PYTHONPATH=. python bench/face_service.py --requests 50 --json out.json

The photo: insightface's 112x112 portrait (``tests/photos.py``) scaled to 360 px, its edge
pixels replicated out to 640x480: one face at a phone photo's size (the script checks the
detector finds exactly one). ``--arch`` builds a bundle around a randomly initialised backbone
of that architecture exported to ONNX (the compute of the real model; its embeddings mean
nothing), otherwise ``--bundle`` is a face model folder (``models/face_model`` by default).

In process: ``mlflow.pyfunc.load_model(...).predict`` on a one-row DataFrame, the median of
``--requests`` calls after ``--warmup``; the split comes from the pipeline's own ``Timings`` over
the same calls. REST: the model logged to a temporary file store, served by ``mlflow models
serve --env-manager local`` on a free loopback port with one worker, one request at a time
(``dataframe_split`` JSON, image as base64), same counts. Overhead = (REST p50 - in-process
p50) / in-process p50: HTTP, JSON, base64 and the scoring server's DataFrame conversion.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench._common import machine

ROOT = Path(__file__).resolve().parents[1]


def photo() -> bytes:
    """A 640x480 JPEG with one face (insightface's portrait, scaled, edges replicated out)."""
    import cv2

    sys.path.insert(0, str(ROOT))
    from tests.photos import insightface_photos

    portrait = insightface_photos()["Tom_Hanks_54745.png"]
    face = cv2.resize(cv2.imread(str(portrait)), (360, 360), interpolation=cv2.INTER_CUBIC)
    top, left = (480 - 360) // 2, (640 - 360) // 2
    frame = cv2.copyMakeBorder(face, top, top, left, left, cv2.BORDER_REPLICATE)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok and frame.shape == (480, 640, 3)
    return data.tobytes()


def build_bundle(arch: str, embedding_size: int, out: Path) -> Path:
    """A bundle around a randomly initialised ``arch`` exported to ONNX (fp32 only)."""
    import torch

    from arcflow.config import AlignParams, ServeParams
    from arcflow.export.onnx import export_onnx
    from arcflow.models import get_backbone
    from arcflow.serve.package import write_bundle

    torch.manual_seed(0)
    model = get_backbone(arch, embedding_size=embedding_size).eval()
    export_onnx(model, out / "backbone.onnx", opset=18)
    write_bundle(
        out / "bundle",
        backbone=out / "backbone.onnx",
        backbone_fp16=None,
        embedding_size=embedding_size,
        serve=ServeParams(),
        align=AlignParams(),
        thresholds=None,
        card=f"# Benchmark model\n\nRandomly initialised {arch}.\n",
    )
    return out / "bundle"


def log_model(bundle: Path, store: Path) -> str:
    """The face pyfunc of ``bundle`` logged to a file store under ``store``; its model URI."""
    import mlflow

    from arcflow.serve.bundle import read_bundle
    from arcflow.serve.pyfunc import log_face_model

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("face-service-bench")
    with mlflow.start_run():
        info = log_face_model(bundle, read_bundle(bundle), name="arcface")
    return info.model_uri


def quantiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": 1e3 * statistics.median(ordered), "p99_ms": 1e3 * p99}


def in_process(uri: str, image: bytes, bundle: Path, args: argparse.Namespace) -> dict:
    """The pyfunc's latency, and the pipeline's per-step split over the same calls."""
    import mlflow.pyfunc
    import pandas as pd

    from arcflow.serve.pipeline import Timings, load_bundle

    model = mlflow.pyfunc.load_model(uri)
    frame = pd.DataFrame({"image": [image]})
    faces = model.predict(frame)
    if len(faces) != 1 or faces["face"].iloc[0] != 0:
        raise SystemExit(f"expected exactly one face in the bench photo, got:\n{faces}")
    seconds = []
    for i in range(args.warmup + args.requests):
        start = time.perf_counter()
        model.predict(frame)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    pipeline, timings = load_bundle(bundle), Timings()
    for _ in range(args.warmup):
        pipeline.analyze([image])
    for _ in range(args.requests):
        pipeline.analyze([image], timings=timings)
    split = {
        step: 1e3 * getattr(timings, step) / args.requests
        for step in ("decode", "detect", "align", "embed")
    }
    return {**quantiles(seconds), "faces_per_s": 1 / statistics.median(seconds), "split_ms": split}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(uri: str, image: bytes, store: Path, args: argparse.Namespace) -> dict:
    """Latency of one photo per request through ``mlflow models serve``."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # its uvicorn
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(store / "serve.log", "w")  # noqa: SIM115 - closed with the server
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    body = json.dumps(
        {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()]]}}
    ).encode()
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (store / "serve.log").read_text()[-3000:]
                    raise SystemExit(f"the scoring server did not start:\n{tail}") from None
                time.sleep(0.5)
        seconds = []
        for i in range(args.warmup + args.requests):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
            if i >= args.warmup:
                seconds.append(time.perf_counter() - start)
        if len(answer["predictions"]) != 1:
            raise SystemExit(f"expected one face over REST, got {answer}")
        return {**quantiles(seconds), "request_bytes": len(body)}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "face_model")
    p.add_argument("--arch", help="a backbone name: bench a random-weight model of it instead")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    image = photo()
    with tempfile.TemporaryDirectory(prefix="arcflow-bench-") as tmp:
        store = Path(tmp)
        bundle = build_bundle(args.arch, args.embedding_size, store) if args.arch else args.bundle
        if not (bundle / "face_pipeline.json").is_file():
            raise SystemExit(f"{bundle}: not a face model folder (run `dvc repro export`)")
        uri = log_model(bundle, store)
        local = in_process(uri, image, bundle, args)
        served = rest(uri, image, store, args)
    overhead = (served["p50_ms"] - local["p50_ms"]) / local["p50_ms"]
    result = {
        "machine": machine("cpu"),
        "model": args.arch or str(args.bundle),
        "requests": args.requests,
        "in_process": local,
        "rest": served,
        "overhead": overhead,
    }
    split = ", ".join(f"{k} {v:.1f}" for k, v in local["split_ms"].items())
    print(f"machine: {result['machine']}; model: {result['model']}")
    print(
        f"in process: p50 {local['p50_ms']:.1f} ms, p99 {local['p99_ms']:.1f} ms, "
        f"{local['faces_per_s']:.2f} faces/s; split (ms): {split}"
    )
    print(f"REST: p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms")
    print(f"overhead over in process (p50): {100 * overhead:.1f}%")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
