"""Partial FC step time and memory by class count and sample rate (one process).

python bench/partial_fc.py                                   # 100K, 1M, 2M classes; rates 0.1, 1.0
python bench/partial_fc.py --classes 100000 --rates 1.0 --device cuda

One step = forward (normalise, sample, cosine, ArcFace margin, softmax cross-entropy) +
backward + the centres' SGD update (momentum, weight decay) on a batch of random 512-d
embeddings. Each configuration runs in a fresh subprocess so that its peak memory is its own:
peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. The weights and the momentum
buffer alone take ``2 × classes × 512 × 4`` bytes (4.1 GB at 1M classes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def one(classes: int, rate: float, batch: int, steps: int, device: str) -> dict[str, float]:
    import torch

    from arcflow.heads.partial_fc import PartialFC

    torch.manual_seed(0)
    head = PartialFC(512, classes, s=64.0, m2=0.5, sample_rate=rate).to(device)
    emb = torch.randn(batch, 512, device=device, requires_grad=True)
    labels = torch.randint(0, classes, (batch,), device=device)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        head(emb, labels).backward()
        head.step(0.1, momentum=0.9, weight_decay=5e-4)
        head.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"ms": 1000 * sorted(times[1:])[len(times[1:]) // 2], "peak_gib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000, 2_000_000])
    p.add_argument("--rates", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: classes rate
    args = p.parse_args()
    if args.one:
        result = one(int(args.one[0]), float(args.one[1]), args.batch, args.steps, args.device)
        print(json.dumps(result))
        return
    from arcflow.devices import cpu_model

    print(
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"device {args.device}, batch {args.batch}, 512-d"
    )
    print(f"{'classes':>10} {'rate':>5} {'step ms':>9} {'peak GiB':>9}")
    for classes in args.classes:
        for rate in args.rates:
            cmd = [sys.executable, __file__, "--one", str(classes), str(rate)]
            cmd += ["--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == -9:  # the kernel's OOM killer
                print(f"{classes:>10} {rate:>5} {'killed: out of memory':>19}", flush=True)
                continue
            if proc.returncode:
                raise SystemExit(proc.stderr)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{classes:>10} {rate:>5} {r['ms']:>9.1f} {r['peak_gib']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
