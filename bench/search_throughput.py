"""Gallery search throughput: probes/s of exact top-k against a 1M x 512 memory-mapped gallery.

PYTHONPATH=. python bench/search_throughput.py               # 1M x 512, P = 1, 16, 256, top-5
PYTHONPATH=. python bench/search_throughput.py --gallery 100000 --budgets 16 64 256 --probes 256

The gallery (random unit float32 rows, ``--per-identity`` rows per identity) is written once
through ``write_embeddings`` into a temporary directory; every configuration then runs in a
fresh subprocess that opens it with ``read_embeddings(mmap=True)`` (open = header checks plus
the chunked finite/unit-norm scan of every row) and searches it from the warm page cache.
probes/s is P / the best of ``--repeats`` searches of the same P probes (the first also maps
the gallery's pages into the process; the machine may be shared). "scratch" is the
tracemalloc peak of one more search (numpy's allocations: the O(P x chunk) buffers, plus the
O(N) identity codes by identity); "peak RSS" is the process's, which counts the gallery pages
the scan mapped (up to the whole 2 GB file: page cache, not private memory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import last_json, machine, parser, run_fresh


def write_gallery(path: Path, n: int, dim: int, per_identity: int, seed: int) -> float:
    """Write ``n`` random unit rows (``per_identity`` per identity) to ``path``; seconds."""
    import numpy as np

    from arcflow.serve.embeddings_file import write_embeddings

    rng = np.random.default_rng(seed)
    emb = np.empty((n, dim), np.float32)
    for start in range(0, n, 1 << 16):
        block = rng.standard_normal((min(1 << 16, n - start), dim), dtype=np.float32)
        emb[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    ids = np.arange(n) // per_identity
    identity = np.char.add("id", ids.astype(str))
    image = np.char.add(np.char.add(identity, "/"), (np.arange(n) % per_identity).astype(str))
    image = np.char.add(image, ".jpg")
    start = time.perf_counter()
    write_embeddings(
        path, emb, image=image, face=np.zeros(n, np.int32), identity=identity, model="bench"
    )
    return time.perf_counter() - start


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it does not start at the parent's)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def one(args: argparse.Namespace, probes: int, budget_mib: int, by_identity: bool) -> dict:
    import tracemalloc

    import numpy as np

    from arcflow.serve.embeddings_file import read_embeddings
    from arcflow.serve.search import chunk_rows_for, search

    start = time.perf_counter()
    gallery = read_embeddings(args.dir, mmap=True)
    opened = time.perf_counter() - start
    rng = np.random.default_rng(args.seed + 1)
    q = rng.standard_normal((probes, gallery.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    labels = gallery.identity_index if by_identity else None
    budget = budget_mib << 20

    def run():
        return search(q, gallery.embeddings, args.k, labels=labels, budget_bytes=budget)

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    run()
    scratch = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "open": opened,
        "seconds": min(times),
        "median": statistics.median(times),
        "chunk": min(chunk_rows_for(budget, probes, gallery.dim), gallery.count),
        "scratch_mib": scratch / 2**20,
        "peak_gib": peak_rss_kib() / 2**20,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--gallery", type=int, default=1_000_000)
    p.add_argument("--per-identity", type=int, default=10)
    p.add_argument("--probes", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--budgets", type=int, nargs="+", default=[64], help="MiB of scratch")
    p.add_argument("--modes", nargs="+", default=["rows", "identities"])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", help=argparse.SUPPRESS)  # internal: the gallery written by main
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: probes budget mode
    args = p.parse_args()
    if args.one:
        probes, budget, mode = args.one
        print(json.dumps(one(args, int(probes), int(budget), mode == "identities")))
        return
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(
        f"{machine('cpu')}, OpenBLAS threads {threads}; gallery {args.gallery:,} x {args.dim} "
        f"float32 ({args.gallery * args.dim * 4 / 2**30:.2f} GiB), "
        f"{args.per_identity} rows per identity, top-{args.k}"
    )
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        args.dir = str(Path(tmp) / "gallery.emb")
        wrote = write_gallery(Path(args.dir), args.gallery, args.dim, args.per_identity, args.seed)
        print(f"write_embeddings: {wrote:.1f} s")
        print(
            "| probes at once | top-k of | budget MiB | chunk rows | s per batch (median) "
            "| probes/s | GFLOP/s | scratch MiB | peak RSS GiB | open s |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for mode in args.modes:
            for probes in args.probes:
                for budget in args.budgets:
                    flags = ("gallery", "dim", "seed", "k", "repeats", "dir")
                    proc = run_fresh(__file__, [str(probes), str(budget), mode], args, flags)
                    if proc.returncode:
                        raise SystemExit(proc.stderr)
                    r = last_json(proc)
                    flops = 2 * probes * args.gallery * args.dim / r["seconds"]
                    print(
                        f"| {probes} | {mode} | {budget} | {r['chunk']:,} "
                        f"| {r['seconds']:.3f} ({r['median']:.3f}) "
                        f"| {probes / r['seconds']:.1f} | {flops / 1e9:.0f} "
                        f"| {r['scratch_mib']:.1f} | {r['peak_gib']:.2f} | {r['open']:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
