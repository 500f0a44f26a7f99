"""Data-layer throughput on one core: RecordIO reads, JPEG decode, the training item, SynthFace.

python bench/data_throughput.py                      # 20,000 crops in a temporary directory
python bench/data_throughput.py --images 5000 --tmp /tmp/arcflow-bench   # keeps/reuses data

Builds a realistic train.rec of 112x112 JPEG crops (quality 95: SynthFace frames encoded,
decoded, warped onto the ArcFace template and re-encoded, as the download and align stages
do), then times each operation over a warm-up and at least ``--seconds`` s, three times, and
prints the median. Reads come from the page cache (the file was just written or reused),
except the cold scan, which evicts the file first (on a VM the host may still cache it).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from arcflow.data.face_records import FaceRecordDataset, write_face_dataset
from arcflow.data.faces import AlignedFaceDataset
from arcflow.data.recordio import RecordReader
from arcflow.data.synthface import SynthFaceSpec, iter_images
from arcflow.data.synthface_release import write_train_split
from arcflow.data.transforms import decode_rgb, train_augmentation
from arcflow.devices import cpu_model
from arcflow.face_template import warp_face

QUALITY = 95
PER_IDENTITY = 16  # SynthFaceParams.train_images_per_identity

#: One timed step: process a chunk, return (items, bytes) done.
Step = Callable[[], tuple[int, int]]


def machine_line() -> str:
    """CPU model, cores, library versions and the current load average."""
    model = cpu_model()
    return (
        f"{model}, {os.cpu_count()} cores (1 thread used), torch {torch.__version__}, "
        f"cv2 {cv2.__version__}, albumentations {A.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}; load {load()}"
    )


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def build_crops(out: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` aligned 112x112 SynthFace crops as an insightface train.rec in ``out``."""
    spec = SynthFaceSpec(
        num_identities=math.ceil(n / PER_IDENTITY), images_per_identity=PER_IDENTITY, seed=seed
    )
    params = [cv2.IMWRITE_JPEG_QUALITY, QUALITY]

    def samples() -> Iterator[tuple[int, bytes]]:
        for identity, _index, bgr, landmarks in itertools.islice(iter_images(spec), n):
            frame = cv2.imdecode(cv2.imencode(".jpg", bgr, params)[1], cv2.IMREAD_COLOR)
            ok, jpeg = cv2.imencode(".jpg", warp_face(frame, landmarks, 112), params)
            assert ok
            yield identity, jpeg.tobytes()

    write_face_dataset(out, samples())


def dataset_in(root: Path, n: int) -> Path:
    """``root/faces`` holding ``n`` crops, reused when it already holds exactly that many."""
    out = root / "faces"
    if (out / "train.rec").exists():
        with FaceRecordDataset(out) as existing:
            if len(existing) == n:
                return out
    start = time.perf_counter()
    build_crops(out, n)
    print(f"built {n} crops in {time.perf_counter() - start:.1f} s -> {out}", flush=True)
    return out


def timed(step: Step, seconds: float) -> tuple[float, float]:
    """Run ``step`` until ``seconds`` have passed; (items/s, bytes/s)."""
    items = nbytes = 0
    start = time.perf_counter()
    while True:
        i, b = step()
        items, nbytes = items + i, nbytes + b
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return items / elapsed, nbytes / elapsed


def measure(step: Step, seconds: float, warmup: float, repeats: int = 3) -> tuple[float, float]:
    """Median (items/s, bytes/s) of ``repeats`` timed runs after a warm-up run."""
    if warmup > 0:
        timed(step, warmup)
    runs = [timed(step, seconds) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def evict(path: Path) -> None:
    """Drop ``path`` from the page cache (Linux, no root needed; pages must not be mapped)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_scan(rec: Path, seconds: float) -> tuple[float, float]:
    """(records/s, bytes/s) of full scans, each from a freshly evicted file; only scans timed."""
    records = nbytes = 0
    busy = 0.0
    while busy < seconds:
        with RecordReader(rec) as reader:  # .idx parsed here, outside the timing
            evict(rec)  # the new map holds no pages yet, so all of them can go
            start = time.perf_counter()
            records += sum(1 for _ in reader)
            busy += time.perf_counter() - start
        nbytes += rec.stat().st_size
    return records / busy, nbytes / busy


def cycling(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """Endless chunks of ``size`` consecutive values, wrapping around."""
    for start in itertools.cycle(range(0, len(values), size)):
        yield values[start : start + size]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=20000, help="crops in the test train.rec")
    p.add_argument("--tmp", type=Path, help="working directory (kept; its dataset is reused)")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timed run length")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up length per measurement")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ["ARCFLOW_PROGRESS"] = "0"
    print(machine_line(), flush=True)
    if args.tmp is None:
        with tempfile.TemporaryDirectory(prefix="arcflow-bench-") as tmp:
            run(args, Path(tmp))
    else:
        args.tmp.mkdir(parents=True, exist_ok=True)
        run(args, args.tmp)


def run(args: argparse.Namespace, root: Path) -> None:
    """Build (or reuse) the crops under ``root``, measure and print the table."""
    rec_dir = dataset_in(root, args.images)
    rng = np.random.default_rng(args.seed)
    rows: list[tuple[str, str, str]] = []

    def record(what: str, result: str, target: str = "") -> None:
        rows.append((what, result, target))
        print(f"  {what}: {result}", flush=True)

    def bench(step: Step) -> tuple[float, float]:
        return measure(step, args.seconds, args.warmup)

    # first, while no other map of the file pins its pages in the page cache
    if hasattr(os, "posix_fadvise"):
        cold_scan(rec_dir / "train.rec", args.warmup)
        runs = [cold_scan(rec_dir / "train.rec", args.seconds) for _ in range(3)]
        records, nbytes = (statistics.median(r[i] for r in runs) for i in range(2))
        record(
            "RecordIO sequential scan, cold (evicted from the page cache before each pass)",
            f"{nbytes / 1e6:,.0f} MB/s ({records:,.0f} records/s)",
            ">= 200 MB/s",
        )
    with FaceRecordDataset(rec_dir) as faces:
        reader = faces.reader
        rec_bytes = (rec_dir / "train.rec").stat().st_size

        def scan() -> tuple[int, int]:
            return sum(1 for _ in reader), rec_bytes

        records, nbytes = bench(scan)
        record(
            "RecordIO sequential scan (iter), page cache warm",
            f"{nbytes / 1e6:,.0f} MB/s ({records:,.0f} records/s)",
            ">= 200 MB/s",
        )
        keys = cycling(rng.permutation(faces.index.image_keys).tolist(), 1000)

        def random_read() -> tuple[int, int]:
            chunk = next(keys)
            return len(chunk), sum(len(reader.read(k)) for k in chunk)

        records, nbytes = bench(random_read)
        record(
            "RecordIO random read(key) via .idx",
            f"{records:,.0f} records/s ({nbytes / 1e6:,.0f} MB/s)",
            ">= 20,000 records/s",
        )
        positions = cycling(rng.permutation(len(faces)).tolist(), 1000)

        def read_unpack() -> tuple[int, int]:
            chunk = next(positions)
            return len(chunk), sum(len(faces[i][1]) for i in chunk)

        items, _ = bench(read_unpack)
        record("FaceRecordDataset[i] (read + unpack)", f"{items:,.0f} records/s")
        jpegs = [faces[i][1] for i in range(len(faces))]
    mean_kb = sum(map(len, jpegs)) / len(jpegs) / 1024
    print(f"  (crops: {len(jpegs)} JPEGs, mean {mean_kb:.1f} KiB)", flush=True)

    jpeg_chunks = cycling(range(len(jpegs)), 500)

    def decode() -> tuple[int, int]:
        chunk = next(jpeg_chunks)
        for i in chunk:
            decode_rgb(jpegs[i])
        return len(chunk), 0

    items, _ = bench(decode)
    record("decode_rgb 112x112 JPEG q95", f"{items:,.0f} images/s")

    dataset = AlignedFaceDataset(rec_dir, augment=train_augmentation())
    positions = cycling(rng.permutation(len(dataset)).tolist(), 500)

    def train_item() -> tuple[int, int]:
        chunk = next(positions)
        for i in chunk:
            dataset[i]
        return len(chunk), 0

    items, _ = bench(train_item)
    record(
        "AlignedFaceDataset[i], train_augmentation() (read + decode + flip + normalise)",
        f"{items:,.0f} images/s",
        ">= 2,000 images/s per core",
    )
    dataset.records.close()

    spec = SynthFaceSpec(num_identities=10**6, images_per_identity=PER_IDENTITY, seed=args.seed)
    frames = iter_images(spec)

    def render() -> tuple[int, int]:
        for _ in itertools.islice(frames, 50):
            pass
        return 50, 0

    render_rate, _ = bench(render)
    record(
        f"SynthFace render, frame {spec.frame_size}, difficulty {spec.difficulty}",
        f"{render_rate:,.0f} images/s",
        "(reported)",
    )

    per_call = max(1, round(1.1 * args.seconds * render_rate / PER_IDENTITY))  # identities
    calls = itertools.count()

    def download() -> tuple[int, int]:
        call = next(calls)
        ids = range(call * per_call, (call + 1) * per_call)
        path = root / f"download-{call}"
        n = write_train_split(path, spec, ids, QUALITY, "bench")
        path.with_suffix(".rec").unlink()
        path.with_suffix(".idx").unlink()
        return n, 0

    items, _ = measure(download, args.seconds, warmup=0.0)  # render above warmed it up
    record(
        "SynthFace render + JPEG q95 + RecordIO write (download stage's write_train_split)",
        f"{items:,.0f} images/s",
        "(reported)",
    )

    print(f"\nload after: {load()}")
    print("| what | result | target |\n|---|---|---|")
    for what, result, target in rows:
        print(f"| {what} | {result} | {target} |")


if __name__ == "__main__":
    main()
