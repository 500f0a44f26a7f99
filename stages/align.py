"""Stage align: warp every face to the 112x112 ArcFace template using 5 landmarks.

The training set (a release's unaligned ``train.rec`` or an ``<identity>/<image>`` folder)
and every evaluation set in the release (LFW, IJB-B/C, MegaFace, YTF, in their real layouts)
are aligned from their 5-point annotations or with ``align.detector``; shipped ``.bin`` sets
pass through. Work is done in shards by ``align.workers`` processes and resumes after an
interruption; ``--shard i/n`` does only every n-th shard (so machines can share the work) and
a final run without it joins them. Writes the aligned dataset, per-set counts
(metrics/align.json) and the set, reason and message of each image that failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arcflow.align.dataset import align_dataset, default_work_dir
from arcflow.atomic import atomic_file, write_json
from stages.common import log, params, parser, run


def shard_arg(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n, got {text!r}")
    return i, n


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--raw", type=Path, required=True, help="raw release directory")
    p.add_argument("--out", type=Path, required=True, help="aligned training set directory")
    p.add_argument(
        "--eval-out", type=Path, help="aligned evaluation sets directory (default: --out)"
    )
    p.add_argument("--metrics", type=Path, default=Path("metrics/align.json"))
    p.add_argument(
        "--failures",
        type=Path,
        default=Path("reports/align_failures.tsv"),
        help="set, reason and message of every image that could not be aligned",
    )
    p.add_argument("--shard", type=shard_arg, help="i/n: align only shards i, i+n, … then stop")
    p.add_argument("--work", type=Path, help="shard folder (default: .<out>.shards beside --out)")
    args = p.parse_args()
    cfg = params(args, "align").align
    work = args.work or default_work_dir(args.out)
    result = align_dataset(
        args.raw, args.out, cfg, eval_out=args.eval_out, work=work, only=args.shard
    )
    if result is None:
        log.info("align: shard %d/%d done in %s; run without --shard to finish", *args.shard, work)
        return
    failures = result.failure_lines()
    with atomic_file(args.failures) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in failures))
    write_json(args.metrics, result.to_dict())
    for line in failures[:5]:
        log.warning("align: skipped %s", line.replace("\t", " "))
    counts = ", ".join(f"{n} {r.aligned}/{r.total}" for n, r in result.reports.items())
    log.info("align: %s; shipped .bin %s", counts, ", ".join(result.shipped_bins) or "none")


if __name__ == "__main__":
    run(main)
