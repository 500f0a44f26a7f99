"""Throughput of the whole align stage (sharded, in worker processes), by worker count.

python bench/align_stage_throughput.py                     # 250 ids x 16 = 4,000 frames
python bench/align_stage_throughput.py --identities 500 --workers 1 2 4

Generates a SynthFace release (training split only, 250x250 frames, JPEG q95) into a temp
folder, then times ``align_dataset`` end to end — listing, decode + warp + encode in
``align.workers`` processes, joining the shards into train.rec — once per worker count, and
prints faces/s and the speed-up over one worker. Process start-up is included (spawned
workers import OpenCV and numpy), as a user of the stage pays it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from arcflow.align.dataset import align_dataset
from arcflow.config import AlignParams, SynthFaceParams
from arcflow.data.synthface_release import write_release


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--identities", type=int, default=250)
    p.add_argument("--images", type=int, default=16, help="frames per identity")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shard-size", type=int, default=250)
    args = p.parse_args()
    from arcflow.devices import cpu_model  # imports torch: keep it out of the spawned workers

    os.environ.setdefault("CI", "true")  # no progress bars in the timings
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; load {load}")
    work = Path(tempfile.mkdtemp(prefix="align-bench-"))
    try:
        params = SynthFaceParams(
            train_identities=args.identities,
            train_images_per_identity=args.images,
            frame_size=250,
            eval_sets=[],
        )
        write_release(params, work / "raw")
        frames = args.identities * args.images
        print(f"{frames} frames of 250x250, shards of {args.shard_size}")
        print(f"{'workers':>8} {'seconds':>8} {'faces/s':>9} {'speed-up':>9}")
        base = None
        for workers in args.workers:
            cfg = AlignParams(workers=workers, shard_size=args.shard_size)
            start = time.perf_counter()
            align_dataset(work / "raw", work / f"out{workers}", cfg)
            seconds = time.perf_counter() - start
            base = base or seconds
            print(f"{workers:>8} {seconds:>8.2f} {frames / seconds:>9.0f} {base / seconds:>8.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
