"""Alignment throughput on ONE core: the similarity warp, and decode + warp + encode.

python bench/align_throughput.py                 # 200 SynthFace 250x250 frames, 2 s per row
python bench/align_throughput.py --seconds 5 --frames 500

Frames are SynthFace renders at LFW's frame size (250x250) with their 5 ground-truth
landmarks, stored as JPEG q95 (as the download stage writes them). Each row runs a warm-up,
then at least ``--seconds`` s three times, and prints the median faces/s. OpenCV is limited to
one thread (``cv2.setNumThreads(1)``), so the numbers are per core.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from arcflow.data.synthface import SynthFaceSpec, iter_images
from arcflow.devices import cpu_model
from arcflow.face_template import alignment_matrix, alignment_residual, warp_face
from arcflow.imageio import decode_image

FRAME = 250
QUALITY = 95
TARGET_WARP = 1000.0  # faces/s per core


def machine_line() -> str:
    model = cpu_model()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores (1 thread used), cv2 {cv2.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}; load {load}"
    )


def rate(step: Callable[[int], None], n: int, seconds: float, warmup: float) -> float:
    """Median faces/s of three runs of ``step(i)`` over i = 0, 1, … (mod ``n``)."""

    def run(limit: float) -> float:
        done, start = 0, time.perf_counter()
        while True:
            for i in range(n):
                step(i)
            done += n
            elapsed = time.perf_counter() - start
            if elapsed >= limit:
                return done / elapsed

    run(warmup)
    return statistics.median(run(seconds) for _ in range(3))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=200, help="distinct frames cycled through")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timed run length")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up length per row")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    cv2.setNumThreads(1)
    print(machine_line(), flush=True)
    spec = SynthFaceSpec(
        num_identities=-(-args.frames // 8), images_per_identity=8, frame_size=FRAME, seed=args.seed
    )
    params = [cv2.IMWRITE_JPEG_QUALITY, QUALITY]
    frames, landmarks, jpegs = [], [], []
    for _identity, _index, bgr, lm in iter_images(spec):
        if len(frames) == args.frames:
            break
        jpeg = cv2.imencode(".jpg", bgr, params)[1].tobytes()
        frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
        landmarks.append(np.asarray(lm, np.float64))
        jpegs.append(jpeg)
    n = len(frames)
    mean_kb = sum(map(len, jpegs)) / n / 1024
    print(f"{n} frames {FRAME}x{FRAME}, JPEG q{QUALITY} mean {mean_kb:.1f} KiB", flush=True)
    matrices = [alignment_matrix(lm) for lm in landmarks]

    rows: list[tuple[str, float, str]] = []

    def record(what: str, step: Callable[[int], None], target: str = "") -> None:
        faces = rate(step, n, args.seconds, args.warmup)
        rows.append((what, faces, target))
        print(f"  {what}: {faces:,.0f} faces/s", flush=True)

    record(
        "warp_face 112x112 (similarity fit + cv2.warpAffine)",
        lambda i: warp_face(frames[i], landmarks[i], 112),
        f">= {TARGET_WARP:,.0f} faces/s per core",
    )
    record("  similarity fit only (alignment_matrix)", lambda i: alignment_matrix(landmarks[i]))
    record(
        "  cv2.warpAffine only (matrix precomputed)",
        lambda i: cv2.warpAffine(frames[i], matrices[i], (112, 112), borderValue=0),
    )
    record("alignment_residual", lambda i: alignment_residual(landmarks[i]))
    record("warp_face 112x96", lambda i: warp_face(frames[i], landmarks[i], 112, 96))
    record("warp_face 224x224", lambda i: warp_face(frames[i], landmarks[i], 224))
    record(
        "decode_image 250x250 JPEG q95",
        lambda i: decode_image(jpegs[i], where="bench"),
    )
    record(
        "  cv2.imdecode IMREAD_COLOR (no checks), for comparison",
        lambda i: cv2.imdecode(np.frombuffer(jpegs[i], np.uint8), cv2.IMREAD_COLOR),
    )

    def pipeline(i: int) -> None:
        crop = warp_face(decode_image(jpegs[i], where="bench"), landmarks[i], 112)
        ok, _ = cv2.imencode(".jpg", crop, params)
        assert ok

    record(
        "decode_image + warp_face 112x112 + JPEG q95 encode (the align stage's per-image work)",
        pipeline,
    )

    ok = rows[0][1] >= TARGET_WARP
    print(f"\nwarp target {'met' if ok else 'MISSED'}")
    print("| what | faces/s (1 core) | target |\n|---|---|---|")
    for what, faces, target in rows:
        print(f"| {what} | {faces:,.0f} | {target} |")


if __name__ == "__main__":
    main()
