"""Join a job's finished shards into its output: train.rec, a pair ``.bin``, an image set.

Shards hold crops in image order, so the output depends only on the inputs and params,
never on how many processes or machines made the shards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from arcflow.align.jobs import AlignJob
from arcflow.align.report import AlignReport
from arcflow.align.shards import ShardStore, plan
from arcflow.data.binpairs import save_bin
from arcflow.data.face_records import write_face_dataset
from arcflow.data.imageset import write_image_set
from arcflow.errors import DataFormatError

#: What an evaluation set's failures break (every one of its images must yield a crop).
_EVAL_RULE = "every image of an evaluation set must give a crop; fix or replace the files"


def contiguous_labels(items: Iterable[tuple[str, bytes]]) -> Iterator[tuple[int, bytes]]:
    """Number identities 0, 1, … in order of first appearance; each must come as one group.

    Identities whose every image failed never appear, so the labels stay contiguous (the
    insightface layout needs classes 0..C-1).
    """
    label, current, seen = -1, None, set()
    for position, (identity, crop) in enumerate(items):
        if identity != current:
            if identity in seen:
                raise DataFormatError(f"item {position}: identity {identity} is not grouped")
            seen.add(identity)
            label, current = label + 1, identity
        yield label, crop


def _crops(store: ShardStore, shard_size: int) -> Iterator[tuple[int, str, bytes]]:
    for shard in plan(store.job, shard_size):
        yield from store.crops(shard)


def job_report(store: ShardStore, shard_size: int) -> AlignReport:
    """The whole job's counts and failures (in image order), from its shards."""
    report = AlignReport()
    for shard in plan(store.job, shard_size):
        report.add(store.report(shard))
    return report


def write_job(
    store: ShardStore, out: Path, *, shard_size: int, image_size: int, max_bad_fraction: float
) -> AlignReport:
    """Write ``store.job``'s output under ``out``; raises when too many images failed.

    ``train`` -> ``out/train.rec|.idx|property``; ``pairs`` -> ``out/<name>.bin``;
    ``set`` -> ``out/sets/<name>.rec|.idx|.names``.
    """
    job: AlignJob = store.job
    report = job_report(store, shard_size)
    if job.complete:
        report.check(0.0, job.root, _EVAL_RULE)
    else:
        report.check(max_bad_fraction, job.root)
    crops = _crops(store, shard_size)
    if job.output == "train":
        if not report.aligned:
            raise DataFormatError(f"{job.root}: no image could be aligned")
        samples = contiguous_labels((group, jpeg) for _, group, jpeg in crops)
        write_face_dataset(out, samples, image_size=(image_size, image_size))
    elif job.output == "pairs":
        by_index = {index: jpeg for index, _, jpeg in crops}
        images = [by_index[i] for a, b, _ in job.pairs for i in (a, b)]
        save_bin(out / f"{job.name}.bin", images, [same for *_, same in job.pairs])
    else:
        (out / "sets").mkdir(parents=True, exist_ok=True)
        named = ((str(job.items[index].ref), jpeg) for index, _, jpeg in crops)
        write_image_set(out / "sets" / job.name, named)
    return report
