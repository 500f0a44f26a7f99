"""IJB-C scoring time at the real sizes, on random unit features (one process, CPU).

PYTHONPATH=. python bench/ijb_scoring.py             # IJB-C sizes
PYTHONPATH=. python bench/ijb_scoring.py --e2e       # also evaluate_ijb end to end (+2 GB)

Sizes: 3,531 reference and 19,593 probe templates, 15,658,489 1:1 pairs (19,557 genuine) drawn
without repeats from reference x probe, 512-d; pooling of 469,375 images into 23,124 templates;
1:N with gallery G1 (1,772 templates) against the 19,593 probes. Each step runs once after the
inputs are built (building them is not timed). Memory in GiB: "RSS before" holds the inputs;
"peak RSS" is the high-water mark during the step (reset through /proc/self/clear_refs), so
peak - before is what the step itself needed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _status_gib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            line = next((ln for ln in f if ln.startswith(key + ":")), None)
    except OSError:
        return None
    return int(line.split()[1]) / 2**20 if line else None


def reset_peak() -> float:
    """Current RSS (GiB); resets the kernel's peak-RSS mark where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_gib("VmRSS") or 0.0


def peak_gib() -> float:
    """Peak RSS since the last :func:`reset_peak` (the process's lifetime peak elsewhere)."""
    hwm = _status_gib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pairs(rng: np.random.Generator, n_ref: int, n_probe: int, n: int, n_genuine: int):
    """``n`` distinct (reference, probe) template ids and labels with ``n_genuine`` ones."""
    flat = rng.choice(n_ref * n_probe, size=n, replace=False, shuffle=False)
    t1, t2 = np.divmod(flat, n_probe)
    labels = np.zeros(n, np.int8)
    labels[rng.choice(n, size=n_genuine, replace=False)] = 1
    return t1, n_ref + t2, labels


def images(rng: np.random.Generator, n_images: int, n_templates: int):
    """Template and media ids: every template has an image, templates hold 1-4 media."""
    tids = np.concatenate(
        [np.arange(n_templates), rng.integers(0, n_templates, n_images - n_templates)]
    )
    tids.sort()
    mids = tids * 4 + rng.integers(0, 4, n_images)
    return tids, mids


def timed(label: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` once and print a table row: seconds and the peak RSS so far."""
    before = reset_peak()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"| {label:<52} | {seconds:>7.2f} | {before:>10.2f} | {peak_gib():>8.2f} |", flush=True)
    return out


def bench_11(args: argparse.Namespace, rng: np.random.Generator, feats: np.ndarray) -> None:
    from arcflow.evaluate import ijb
    from arcflow.evaluate.scores import roc_points, tar_at_far_nearest

    tids = np.arange(feats.shape[0])
    t1, t2, labels = pairs(rng, args.refs, args.probes, args.pairs, args.genuine)
    what = f"score_template_pairs ({args.pairs:,} pairs)"
    scores = timed(what, lambda: ijb.score_template_pairs(tids, feats, t1, t2))

    def read_roc() -> list[float]:
        fpr, tpr, _ = roc_points(labels, scores)
        return [tar_at_far_nearest(fpr, tpr, far) for far in FARS]

    timed("roc_points + TAR at 6 FARs", read_roc)
    timed("verify_11 (roc, 6 TARs, AUC, EER)", lambda: ijb.verify_11(scores, labels))


def bench_1n(args: argparse.Namespace, rng: np.random.Generator, feats: np.ndarray) -> None:
    from arcflow.evaluate import ijb

    tids = np.arange(feats.shape[0])
    g_tids, p_tids = tids[: args.gallery], tids[args.refs :]
    p_subjects = rng.integers(0, args.subjects, p_tids.size)
    timed(
        f"identify_1n ({args.gallery:,} gallery x {p_tids.size:,} probes)",
        lambda: ijb.identify_1n(tids, feats, g_tids, g_tids, p_tids, p_subjects),
    )


def bench_pooling(args: argparse.Namespace, rng: np.random.Generator, n_templates: int) -> None:
    from arcflow.data.protocols.ijb import FaceTidMid, TemplatePairs
    from arcflow.evaluate import ijb

    img_tids, img_mids = images(rng, args.images, n_templates)
    img_feats = rng.standard_normal((args.images, args.dim), dtype=np.float32)
    faceness = rng.random(args.images, dtype=np.float32)
    timed(
        f"template_features ({args.images:,} images -> {n_templates:,})",
        lambda: ijb.template_features(img_feats, img_tids, img_mids, faceness),
    )
    if not args.e2e:
        return
    flipped = rng.standard_normal((args.images, args.dim), dtype=np.float32)
    meta = FaceTidMid(np.array(["x"] * args.images), img_tids, img_mids)
    t1, t2, labels = pairs(rng, args.refs, args.probes, args.pairs, args.genuine)
    timed(
        "evaluate_ijb (flip, faceness, both variants, 1:1)",
        lambda: ijb.evaluate_ijb(img_feats, flipped, meta, faceness, TemplatePairs(t1, t2, labels)),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--refs", type=int, default=3_531)
    p.add_argument("--probes", type=int, default=19_593)
    p.add_argument("--pairs", type=int, default=15_658_489)
    p.add_argument("--genuine", type=int, default=19_557)
    p.add_argument("--images", type=int, default=469_375)
    p.add_argument("--gallery", type=int, default=1_772)
    p.add_argument("--subjects", type=int, default=3_531)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--e2e", action="store_true", help="also time evaluate_ijb (plain + flipped)")
    args = p.parse_args()
    from arcflow.devices import cpu_model

    print(
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, {args.dim}-d"
    )
    rng = np.random.default_rng(0)
    n_templates = args.refs + args.probes
    feats = unit(rng, n_templates, args.dim)
    print(f"\n| {'step':<52} | {'s':>7} | {'RSS before':>10} | {'peak RSS':>8} |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 12}|{'-' * 10}|")
    bench_11(args, rng, feats)
    bench_1n(args, rng, feats)
    bench_pooling(args, rng, n_templates)


if __name__ == "__main__":
    main()
