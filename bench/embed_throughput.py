"""Embedding throughput of the evaluate stage: decode + normalise + f(x) + f(flip(x)).

PYTHONPATH=. python bench/embed_throughput.py                         # CPU, the default model
PYTHONPATH=. python bench/embed_throughput.py --backbone r100 --device cuda --batch 256

Crops are random 112x112 JPEGs (quality 95) read from memory; a backbone of random weights
gives the same speed as a trained one. On CUDA the encoder runs channels_last in bf16 autocast.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from arcflow.data.transforms import encode_jpeg
from arcflow.devices import cpu_model, resolve_device
from arcflow.evaluate.embed import TorchEncoder, embed_images
from arcflow.models import get_backbone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="r18")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier (r100: use 1)")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    crops = [encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(64)]
    images = [crops[i % 64] for i in range(args.images)]
    encoder = TorchEncoder(get_backbone(args.backbone, width=args.width), device=device)
    read = lambda a, b: images[a:b]  # noqa: E731
    embed_images(encoder, read, 2 * args.batch, batch_size=args.batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    embed_images(encoder, read, args.images, batch_size=args.batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_model()
    print(f"{name}, torch {torch.__version__}, python {platform.python_version()}")
    print("| backbone | width | device | batch | images | s | images/s (x2 with flip) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    print(
        f"| {args.backbone} | {args.width} | {device.type} | {args.batch} | {args.images} "
        f"| {seconds:.2f} | {args.images / seconds:.0f} |"
    )


if __name__ == "__main__":
    main()
