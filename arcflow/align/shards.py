"""Sharded, resumable alignment: fixed shards of each job, done in worker processes.

Every job is cut into shards of ``align.shard_size`` consecutive images. A finished shard is
two files in the work folder, ``<job>/<shard>.rec|.idx`` (the crops, record id = image
index) and ``<job>/<shard>.json`` (counts and failures), the JSON written last, so a shard
either exists whole or not at all. An interrupted run therefore resumes from the shards that
were finished, a work folder made for other inputs or params is cleared first (its
``fingerprint``), and shards can be split between processes or machines (``only=(i, n)``
takes shards ``i, i+n, i+2n, …``) because the outputs never depend on who made a shard.
Processes that start together on one work folder (``--shard`` parts, a cluster's tasks) check
and clear it under a file lock, so none of them deletes shards another has begun.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from arcflow.align.aligner import Aligner, Crop
from arcflow.align.jobs import AlignJob
from arcflow.align.report import AlignReport
from arcflow.atomic import write_json
from arcflow.config import AlignParams
from arcflow.data.recordio import IRHeader, RecordReader, RecordWriter, pack, unpack
from arcflow.progress import progress

log = logging.getLogger("arcflow")

#: Settings that do not change what a shard holds (resuming with other values is fine).
_NOT_IN_FINGERPRINT = {"workers"}


@dataclass(frozen=True)
class Shard:
    """Images ``start:stop`` of the job ``job``; ``index`` numbers it within the job."""

    job: str
    index: int
    start: int
    stop: int

    @property
    def stem(self) -> str:
        return f"shard-{self.index:05d}"


def plan(job: AlignJob, shard_size: int) -> list[Shard]:
    """The shards of ``job``, in order."""
    starts = range(0, len(job.items), shard_size)
    return [
        Shard(job.name, i, start, min(start + shard_size, len(job.items)))
        for i, start in enumerate(starts)
    ]


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


class ShardStore:
    """The finished shards of one job in ``work/<job>/``; cleared when its inputs changed."""

    def __init__(self, work: Path, job: AlignJob, cfg: AlignParams) -> None:
        self.job = job
        self.folder = work / job.name
        settings = cfg.model_dump(mode="json", exclude=_NOT_IN_FINGERPRINT)
        fingerprint = hashlib.sha256(
            json.dumps([job.fingerprint(), settings], sort_keys=True).encode()
        ).hexdigest()
        stamp = self.folder / "fingerprint"
        with _exclusive(work / f".{job.name}.lock"):
            if not stamp.is_file() or stamp.read_text() != fingerprint:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir(parents=True)
                stamp.write_text(fingerprint)

    def _paths(self, shard: Shard) -> tuple[Path, Path, Path]:
        base = self.folder / shard.stem
        return base.with_suffix(".rec"), base.with_suffix(".idx"), base.with_suffix(".json")

    def done(self, shard: Shard) -> bool:
        return self._paths(shard)[2].is_file()

    def report(self, shard: Shard) -> AlignReport:
        data = json.loads(self._paths(shard)[2].read_text())
        failures = [(reason, message) for reason, message in data["failures"]]
        return AlignReport.from_dict(data["counts"], failures)

    def crops(self, shard: Shard) -> Iterator[tuple[int, str, bytes]]:
        """``(image index, identity, jpeg)`` of the shard's crops, in image order."""
        rec, idx, meta = self._paths(shard)
        groups = json.loads(meta.read_text())["groups"]
        with RecordReader(rec, idx) as reader:
            for payload, group in zip(reader, groups, strict=True):
                header, jpeg = unpack(payload)
                yield header.id, group, jpeg


def _part(job: AlignJob, shard: Shard) -> AlignJob:
    """The shard's images as a job of their own (what a worker process is sent)."""
    return AlignJob(job.name, job.root, job.items[shard.start : shard.stop], job.output)


def _align_shard(aligner: Aligner, part: AlignJob, shard: Shard, folder: Path) -> int:
    """Align one shard (its images: ``part``) into ``folder``; returns its number of images."""
    base = folder / shard.stem
    report, groups = AlignReport(), []
    with RecordWriter(base.with_suffix(".rec"), base.with_suffix(".idx")) as writer:
        for outcome in aligner.align(part, range(len(part.items))):
            report.total += 1
            index = shard.start + outcome.index
            if isinstance(outcome, Crop):
                writer.write(pack(IRHeader(0, 0.0, index, 0), outcome.jpeg))
                groups.append(outcome.group)
                report.aligned += 1
                report.centre_crops += outcome.centre_crop
            else:
                report.fail(outcome.message, outcome.reason)
    summary = {"counts": report.to_dict(), "failures": report.failures, "groups": groups}
    write_json(base.with_suffix(".json"), summary)  # last: the shard is done
    return report.total


_worker: Aligner | None = None


def _start_worker(cfg: AlignParams, threads: int) -> None:
    """Worker process set-up: one Aligner, and CPU threads shared fairly between workers."""
    global _worker
    cv2.setNumThreads(1)
    if cfg.detector != "annotations":
        import torch

        torch.set_num_threads(threads)
    _worker = Aligner(cfg)


def _align_shard_in_worker(part: AlignJob, shard: Shard, folder: Path) -> int:
    assert _worker is not None, "worker not started"
    return _align_shard(_worker, part, shard, folder)


def align_shards(
    jobs: list[AlignJob], cfg: AlignParams, work: Path, *, only: tuple[int, int] | None = None
) -> dict[str, ShardStore]:
    """Align every unfinished shard of ``jobs`` into ``work`` (``only=(i, n)``: shards i mod n).

    Returns each job's store; with ``only`` unset every shard is finished on return.
    """
    stores = {job.name: ShardStore(work, job, cfg) for job in jobs}
    todo = [
        (job, shard)
        for job in jobs
        for shard in plan(job, cfg.shard_size)
        if (only is None or shard.index % only[1] == only[0]) and not stores[job.name].done(shard)
    ]
    total = sum(len(plan(job, cfg.shard_size)) for job in jobs)
    if total - len(todo) and only is None:
        done = total - len(todo)
        log.info("align: resuming, %d of %d shards already done in %s", done, total, work)
    bar = progress(total=sum(s.stop - s.start for _, s in todo), desc="align", unit="face")
    try:
        if cfg.workers <= 1 or len(todo) <= 1:
            aligner = Aligner(cfg)
            for job, shard in todo:
                folder = stores[job.name].folder
                bar.update(_align_shard(aligner, _part(job, shard), shard, folder))
            aligner.close()
        else:
            _run_pool(todo, cfg, stores, bar)
    finally:
        bar.close()
    return stores


def _run_pool(
    todo: list[tuple[AlignJob, Shard]], cfg: AlignParams, stores: dict[str, ShardStore], bar: Any
) -> None:
    """Shards in ``cfg.workers`` spawned processes, at most two queued per worker."""
    workers = min(cfg.workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, context, _start_worker, (cfg, threads)) as pool:
        pending: set[Future[int]] = set()
        queue = iter(todo)
        try:
            for job, shard in queue:
                folder = stores[job.name].folder
                pending.add(pool.submit(_align_shard_in_worker, _part(job, shard), shard, folder))
                if len(pending) >= 2 * workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    bar.update(sum(f.result() for f in finished))
            for future in pending:
                bar.update(future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
