"""Trillion-Pairs scoring at a reduced scale, and the full scale extrapolated from it.

PYTHONPATH=. python bench/trillion_pairs.py                     # 20K probes x 200K distractors
PYTHONPATH=. python bench/trillion_pairs.py --device cuda --chunk 65536 --block 268435456 \
    --max-buffer 1073741824 --probes 274000 --distractors 1580000   # the full size on a GPU

Synthetic unit features, 512-d: probes are identity centres plus noise (~48 images an identity,
like the 274K images of 5.7K identities), distractors uniform on the sphere. One run =
``evaluate_trillion``: every probe x distractor and probe x probe pair scored, TPR@FPR=1e-9,
identification TPR@FPR=1e-3 (its exact threshold, k ~ 1e-3 of the impostors) and the ROC.
Two modes: one pass (the 1e-3 candidates fit ``--max-buffer``) and two passes (forced with a
zero buffer: what the full scale needs on a CPU, whose 4.7e8 candidates do not fit the default).
Each mode runs in a fresh subprocess; peak memory is its peak RSS (CPU) or
``max_memory_allocated`` (CUDA). The full-scale time is the full pair count (274K x 1.58M +
274K^2 / 2) at the measured pairs/s of the mode that scale needs. Data generation is not timed.
"""

from __future__ import annotations

import argparse
import json

from bench._common import last_json, machine, measure, parser, probe_features, run_fresh

FULL_PROBES, FULL_IDS, FULL_DISTRACTORS = 274_000, 5_700, 1_580_000


def _pairs(probes: int, distractors: int) -> int:
    return probes * distractors + probes * (probes - 1) // 2


def _data(probes: int, distractors: int, dim: int, seed: int):
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    dist = torch.nn.functional.normalize(torch.randn(distractors, dim, generator=gen), dim=1)
    rng = np.random.default_rng(seed)
    identities = max(1, round(probes * FULL_IDS / FULL_PROBES))
    ids = rng.integers(0, identities, probes)
    return probe_features(rng, ids, identities, dim), ids, dist.numpy()


def one(args: argparse.Namespace, max_buffer: int) -> dict[str, float]:
    from arcflow.evaluate.trillion import evaluate_trillion

    feats, ids, dist = _data(args.probes, args.distractors, args.dim, args.seed)
    result, stats = measure(
        lambda: evaluate_trillion(
            feats,
            ids,
            dist,
            device=args.device,
            chunk=args.chunk,
            block=args.block,
            max_buffer=max_buffer,
            quiet=True,
        ),
        args.device,
    )
    return {
        **stats,
        "passes": result.details["passes"],
        "ver": result.metrics["ver_tpr_fpr_1e-9"],
        "id": result.metrics["id_tpr_fpr_1e-3"],
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--probes", type=int, default=20_000)
    p.add_argument("--distractors", type=int, default=200_000)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--block", type=int, default=1 << 24)
    p.add_argument("--max-buffer", type=int, default=1 << 26)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: max_buffer
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one(args, args.one)))
        return
    pairs = _pairs(args.probes, args.distractors)
    full = _pairs(FULL_PROBES, FULL_DISTRACTORS)
    full_k = full // 1000 + 1  # the 1e-3 threshold's rank at full scale (different-id pairs ~ all)
    print(
        f"{machine(args.device)}, {args.probes:,} probes x {args.distractors:,} distractors, "
        f"{args.dim}-d, {pairs:.3g} pairs, chunk {args.chunk}, block {args.block}"
    )
    print("| passes | seconds | pairs/s | GFLOP/s | peak GiB | ver TPR@1e-9 | id TPR@1e-3 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rates = {}
    for max_buffer in (args.max_buffer, 0):
        flags = ("probes", "distractors", "dim", "chunk", "block", "device", "seed")
        proc = run_fresh(__file__, [str(max_buffer)], args, flags)
        if proc.returncode:
            raise SystemExit(proc.stderr or f"killed ({proc.returncode})")
        r = last_json(proc)
        rates[r["passes"]] = pairs / r["seconds"]
        print(
            f"| {r['passes']} | {r['seconds']:.1f} | {pairs / r['seconds']:.3g} | "
            f"{2 * args.dim * pairs / r['seconds'] / 1e9:.0f} | {r['peak_gib']:.2f} | "
            f"{r['ver']:.4f} | {r['id']:.4f} |",
            flush=True,
        )
    passes = 1 if full_k <= args.max_buffer else 2
    hours = full / rates[passes] / 3600
    print(
        f"\nFull scale ({FULL_PROBES:,} x {FULL_DISTRACTORS:,}, {full:.3g} pairs; the 1e-3 "
        f"threshold is rank {full_k:.3g}, {passes} pass(es) with max_buffer {args.max_buffer:.3g}):"
        f" {hours:.1f} h on {args.device} at {rates[passes]:.3g} pairs/s"
    )


if __name__ == "__main__":
    main()
