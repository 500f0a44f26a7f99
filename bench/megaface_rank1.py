"""MegaFace Challenge 1 scoring time at full size: 1M distractors, 3,530 FaceScrub-like probes.

PYTHONPATH=. python bench/megaface_rank1.py              # 1M x 3,530, 512-d; plain and refined
PYTHONPATH=. python bench/megaface_rank1.py --distractors 100000 --chunks 2048 8192 --device cuda

Synthetic unit features: probes are identity centres plus noise (530 identities, ~6.7 images
each), distractors uniform on the sphere; six distractor lists of 10 .. 1M drawn independently
(not nested, the worst case for grouping). One run = every list's rank-1, TAR@FAR=1e-6 and the
ROC's top 1e-3 in one pass (``evaluate_megaface``); "refined" adds the noise lists (605 probes,
719 distractors) and scores both variants in the same pass. Each configuration runs in a fresh
subprocess; peak memory is that process's peak RSS (CPU) or ``max_memory_allocated`` (CUDA),
the 2 GB distractor matrix included. Data generation is not timed.
"""

from __future__ import annotations

import argparse
import json

from bench._common import last_json, machine, measure, parser, probe_features, run_fresh

SIZES = (10, 100, 1000, 10_000, 100_000, 1_000_000)


def _data(distractors: int, probes: int, identities: int, dim: int, seed: int):
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    dist = np.empty((distractors, dim), np.float32)
    for start in range(0, distractors, 1 << 16):
        block = torch.randn(min(1 << 16, distractors - start), dim, generator=gen)
        dist[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1).numpy()
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.integers(0, identities, probes))
    feats = probe_features(rng, ids, identities, dim)
    sizes = [s for s in SIZES if s < distractors] + [distractors]
    lists = {s: rng.choice(distractors, s, replace=False) for s in sizes}
    later = np.flatnonzero(np.diff(ids, prepend=-1) == 0)  # every identity keeps a clean image
    noisy_p = rng.choice(later, min(605, later.size), replace=False)
    noisy_d = rng.choice(distractors, min(719, distractors // 10), replace=False)
    return feats, ids, dist, lists, noisy_p, noisy_d


def one(args: argparse.Namespace, refined: bool, chunk: int) -> dict[str, float]:
    from arcflow.evaluate.megaface import evaluate_megaface

    feats, ids, dist, lists, noisy_p, noisy_d = _data(
        args.distractors, args.probes, args.identities, args.dim, args.seed
    )
    noise = {"noisy_probes": noisy_p, "noisy_distractors": noisy_d} if refined else {}
    result, stats = measure(
        lambda: evaluate_megaface(
            feats, ids, dist, lists, device=args.device, chunk=chunk, quiet=True, **noise
        ),
        args.device,
    )
    return {
        **stats,
        "rank1": result.metrics["rank1"],
        "tar": result.metrics["tar_far_1e-6"],
        "refined_rank1": result.metrics.get("refined_rank1", float("nan")),
        "rows": len(feats) + (result.details["n_noisy_probes"] if refined else 0),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--distractors", type=int, default=1_000_000)
    p.add_argument("--probes", type=int, default=3530)
    p.add_argument("--identities", type=int, default=530)
    p.add_argument("--chunks", type=int, nargs="+", default=[2048])
    p.add_argument("--variants", nargs="+", default=["plain", "refined"])
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: variant chunk
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args, args.one[0] == "refined", int(args.one[1]))))
        return
    print(
        f"{machine(args.device)}, {args.distractors:,} distractors x {args.probes:,} probes "
        f"({args.identities} ids), {args.dim}-d"
    )
    print("| variant | chunk | seconds | G scores/s | GFLOP/s | peak GiB | rank-1 | TAR@1e-6 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for variant in args.variants:
        for chunk in args.chunks:
            flags = ("distractors", "probes", "identities", "dim", "device", "seed")
            proc = run_fresh(__file__, [variant, str(chunk)], args, flags)
            if proc.returncode == -9:  # the kernel's OOM killer
                print(f"| {variant} | {chunk} | killed: out of memory | | | | | |", flush=True)
                continue
            if proc.returncode:
                raise SystemExit(proc.stderr)
            r = last_json(proc)
            scores = r["rows"] * args.distractors / r["seconds"]
            rank1 = f"{r['rank1']:.4f}"
            if variant == "refined":
                rank1 += f" / {r['refined_rank1']:.4f}"
            print(
                f"| {variant} | {chunk} | {r['seconds']:.1f} | {scores / 1e9:.2f} | "
                f"{2 * args.dim * scores / 1e9:.0f} | {r['peak_gib']:.2f} | {rank1} | "
                f"{r['tar']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
