"""Face-detection throughput per backend on a 640-px photo, on this machine's CPU (or GPU).

python bench/detect_throughput.py                       # insightface's t1.jpg from the test cache
python bench/detect_throughput.py --image group.jpg --retinaface-weights retinaface_resnet50.zip

The photo is resized so its longer side is ``--size`` px (default 640) and detected over and
over, one image per call and ``--batch`` copies per call, for at least ``--seconds`` s after a
warm-up; the median of three runs is printed as images/s and faces/s.

- mtcnn: facenet-pytorch's shipped weights (real detections);
- retinaface: ResNet-50 at ``max_size = --size``. Without ``--retinaface-weights`` the network
  is randomly initialised: its speed is the real network's (same layers, same input size),
  but its "faces" are noise (capped at keep_top_k = 750 per image), so its faces/s is not
  meaningful and the table says so. Denormal floats are flushed to zero for the random
  network, which otherwise spends most of its time in them on a CPU.

The default photo is the one tests/integration/test_detect_real_photos.py caches (run that
test once, or pass --image).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from arcflow.align.detectors import Detector, get_detector, resolve_device
from arcflow.align.detectors.retinaface import build_network
from arcflow.devices import cpu_model


def default_image() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arcflow" / "test-assets" / "insightface-0.7.3" / "t1.jpg"


def machine_line(device: torch.device) -> str:
    model = cpu_model()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), running on {where}; "
        f"load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def measure(step: Callable[[], int], seconds: float, repeats: int = 3) -> tuple[float, float]:
    """Median (calls/s, faces/s) of ``repeats`` runs of at least ``seconds`` each."""
    step()  # warm-up
    rates = []
    for _ in range(repeats):
        calls = faces = 0
        start = time.perf_counter()
        while True:
            faces += step()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append((calls / elapsed, faces / elapsed))
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def bench(detector: Detector, image: np.ndarray, batch: int, seconds: float) -> list[tuple]:
    rows = []
    for n in sorted({1, batch}):
        images = [image] * n

        def step(images: list[np.ndarray] = images) -> int:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            found = sum(len(d) for d in detector.detect(images))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return found

        calls, faces = measure(step, seconds)
        rows.append((n, calls * n, faces))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image", type=Path, default=default_image(), help="a photo with faces")
    p.add_argument("--size", type=int, default=640, help="longer side of the resized photo")
    p.add_argument("--batch", type=int, default=4, help="images per call, besides 1")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum length of a timed run")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--retinaface-weights", type=Path, help="real RetinaFace weights (optional)")
    p.add_argument("--only", choices=["mtcnn", "retinaface"], help="one backend only")
    args = p.parse_args()

    photo = cv2.imread(str(args.image), cv2.IMREAD_COLOR) if args.image.is_file() else None
    if photo is None:
        raise SystemExit(
            f"cannot read {args.image}: pass --image, or run "
            "tests/integration/test_detect_real_photos.py once to cache insightface's t1.jpg"
        )
    scale = args.size / max(photo.shape[:2])
    image = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    device = resolve_device(args.device)
    print(machine_line(device), flush=True)
    print(f"image: {args.image.name} resized to {image.shape[1]}x{image.shape[0]}", flush=True)

    table: list[tuple[str, str, int, float, str]] = []
    if args.only in (None, "mtcnn"):
        detector = get_detector("mtcnn", device=device)
        for n, ips, fps in bench(detector, image, args.batch, args.seconds):
            table.append(("mtcnn", "shipped (facenet-pytorch 2.6.0)", n, ips, f"{fps:.1f}"))
            print(f"  mtcnn batch {n}: {ips:.2f} images/s", flush=True)
    if args.only in (None, "retinaface"):
        with tempfile.TemporaryDirectory(prefix="arcflow-bench-") as tmp:
            weights, random = args.retinaface_weights, args.retinaface_weights is None
            if random:
                torch.manual_seed(0)
                weights = Path(tmp) / "random_resnet50.pth"
                torch.save(build_network().state_dict(), weights)
                torch.set_flush_denormal(True)
            detector = get_detector(
                "retinaface", weights=weights, max_size=args.size, device=device
            )
            label = "RANDOM (speed only)" if random else weights.name
            for n, ips, fps in bench(detector, image, args.batch, args.seconds):
                faces = "n/a (random)" if random else f"{fps:.1f}"
                table.append(("retinaface r50", label, n, ips, faces))
                print(f"  retinaface batch {n}: {ips:.2f} images/s", flush=True)

    print()
    print("| backend | weights | images/call | images/s | faces/s |")
    print("|---|---|---|---|---|")
    for name, label, n, ips, faces in table:
        print(f"| {name} | {label} | {n} | {ips:.2f} | {faces} |")


if __name__ == "__main__":
    main()
