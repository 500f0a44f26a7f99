"""LFW-sized 10-fold verification: 6,000 pairs of random 512-d unit features.

python bench/pair_verification.py            # target: <= 0.5 s for the whole protocol

Times ``evaluate_pairs`` (distances, 10-fold accuracy on 400 thresholds, VAL@FAR on 4,000
thresholds per fold, ROC and AUC) and, for scale, the protocol from precomputed distances.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from arcflow.devices import cpu_model
from arcflow.evaluate.verification import (
    evaluate_pairs,
    kfold_accuracy,
    kfold_splits,
    kfold_val_far,
    pair_distances,
)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    same = np.arange(args.pairs) % 600 < 300  # LFW's fold layout: 300 same, then 300 different
    a = rng.standard_normal((args.pairs, args.dim)).astype(np.float32)
    b = np.where(
        same[:, None],
        a + rng.standard_normal(a.shape).astype(np.float32),
        rng.standard_normal(a.shape).astype(np.float32),
    )
    emb = np.empty((2 * args.pairs, args.dim), np.float32)
    emb[0::2] = a / np.linalg.norm(a, axis=1, keepdims=True)
    emb[1::2] = b / np.linalg.norm(b, axis=1, keepdims=True)
    dist = pair_distances(emb).astype(np.float64)
    folds = kfold_splits(args.pairs, 10)
    whole = best_of(lambda: evaluate_pairs(emb, same), args.repeats)
    from_dist = best_of(
        lambda: (kfold_accuracy(dist, same, folds), kfold_val_far(dist, same, folds)),
        args.repeats,
    )
    print(f"machine: {cpu_model()}, {platform.python_version()}, numpy {np.__version__}")
    print(f"| step | best of {args.repeats} |")
    print("|---|---:|")
    print(f"| evaluate_pairs, {args.pairs:,} pairs x {args.dim}-d | {whole:.3f} s |")
    print(f"| 10-fold accuracy + VAL@FAR from distances | {from_dist:.3f} s |")


if __name__ == "__main__":
    main()
