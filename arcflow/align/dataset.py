"""Align a whole raw dataset: its training set, its evaluation sets, shipped ``.bin`` sets.

The training set is a release's unaligned ``train.rec`` (landmarks in each record), an
``<identity>/<image>`` folder (faces found by ``align.detector``), or an insightface release
that is aligned already (``train.rec`` + ``property``: validated and copied). Evaluation sets
found in the release (:data:`arcflow.align.jobs.EVAL_LAYOUTS`) use their annotations, or the
detector with a centre crop when no face is found. Shipped aligned ``.bin`` sets
(``bins/*.bin``, or ``*.bin`` beside an aligned release's ``train.rec``) are validated and
copied, unless the same set was aligned from its raw release here.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from arcflow.align.jobs import AlignJob, eval_jobs, folder_job, protocol_files, release_job
from arcflow.align.outputs import write_job
from arcflow.align.report import AlignReport
from arcflow.align.shards import align_shards
from arcflow.atomic import atomic_dir
from arcflow.config import AlignParams
from arcflow.data.binpairs import load_bin
from arcflow.data.dataset_label import write_dataset_label
from arcflow.data.face_records import read_face_dataset_index, read_face_property
from arcflow.errors import ConfigError, DataFormatError

log = logging.getLogger("arcflow")


@dataclass
class AlignedDataset:
    """What :func:`align_dataset` wrote: a report per aligned set, pairs per shipped .bin."""

    reports: dict[str, AlignReport] = field(default_factory=dict)
    shipped_bins: dict[str, int] = field(default_factory=dict)

    def failure_lines(self) -> list[str]:
        """``set<TAB>reason<TAB>message`` per failed image."""
        return [f"{n}\t{line}" for n, r in self.reports.items() for line in r.failure_lines()]

    def to_dict(self) -> dict[str, object]:
        counts: dict[str, object] = {n: r.to_dict() for n, r in self.reports.items()}
        return {**counts, "shipped_bins": dict(self.shipped_bins)}


def find_jobs(raw: Path, cfg: AlignParams) -> list[AlignJob]:
    """The training set and the evaluation sets of ``raw``; checks a detector is set if needed."""
    if is_aligned_release(raw):
        jobs = eval_jobs(raw)  # the training set passes through
    elif (raw / "train.rec").exists():
        jobs = [release_job(raw / "train.rec"), *eval_jobs(raw)]
    else:
        jobs = [folder_job(raw), *eval_jobs(raw)]
    unannotated = [job.name for job in jobs if job.needs_detector]
    if unannotated and cfg.detector == "annotations":
        raise ConfigError(
            f"{raw}: {', '.join(unannotated)} come without landmark annotations, "
            "so faces must be detected",
            hint="set align.detector to retinaface_mnet (the default), mtcnn or retinaface",
        )
    weights = cfg.retinaface_weights
    uses_weights = cfg.detector in ("retinaface", "retinaface_mnet")
    if unannotated and uses_weights and weights and not Path(weights).is_file():
        raise FileNotFoundError(2, "no such file", weights)
    return jobs


def is_aligned_release(raw: Path) -> bool:
    """An insightface release (``train.rec`` + ``property``, e.g. MS1MV2's faces_emore) is
    aligned already: its training set is validated and copied, not aligned again."""
    return (raw / "train.rec").is_file() and (raw / "property").is_file()


def _copy_aligned_training_set(raw: Path, out: Path) -> AlignReport:
    classes, keys, labels = read_face_dataset_index(raw)  # validates header0 and the index
    found = int(labels.max()) + 1 if len(labels) else 0
    if read_face_property(raw)[0] != found or classes != found:
        raise DataFormatError(
            f"{raw / 'property'}: class count differs from the {found} labels in train.rec"
        )
    for name in ("train.rec", "train.idx", "property"):
        shutil.copyfile(raw / name, out / name)
    return AlignReport(total=len(keys), aligned=len(keys))


def default_work_dir(out: Path) -> Path:
    """Where shards wait to be joined: ``.<name>.shards`` beside the output."""
    return out.with_name(f".{out.name}.shards")


def align_dataset(
    raw: Path,
    out: Path,
    cfg: AlignParams,
    *,
    eval_out: Path | None = None,
    work: Path | None = None,
    only: tuple[int, int] | None = None,
) -> AlignedDataset | None:
    """Align ``raw``: the training set into ``out``, evaluation sets into ``eval_out``.

    ``eval_out`` defaults to ``out``; the two are separate so that a change to an evaluation
    set never makes the training data look changed. Outputs appear only when every set is
    written. Shards already in ``work`` are reused; with ``only=(i, n)`` just shards
    ``i, i+n, …`` are aligned and None is returned (a later call without it joins them).
    The shard folder is removed once the outputs are in place.
    """
    if not raw.is_dir():
        raise FileNotFoundError(2, "no such directory", str(raw))
    work = work or default_work_dir(out)
    jobs = find_jobs(raw, cfg)
    stores = align_shards(jobs, cfg, work, only=only)
    if only is not None:
        return None
    result = AlignedDataset()
    with ExitStack() as outputs:
        train_dir = outputs.enter_context(atomic_dir(out))
        eval_dir = train_dir
        if eval_out is not None and eval_out.resolve() != out.resolve():
            eval_dir = outputs.enter_context(atomic_dir(eval_out))
        if is_aligned_release(raw):
            result.reports["train"] = _copy_aligned_training_set(raw, train_dir)
        for job in jobs:
            result.reports[job.name] = write_job(
                stores[job.name],
                train_dir if job.output == "train" else eval_dir,
                shard_size=cfg.shard_size,
                image_size=cfg.image_size,
                max_bad_fraction=cfg.max_bad_fraction,
            )
        shipped = sorted((raw / "bins").glob("*.bin"))
        if is_aligned_release(raw):  # faces_emore keeps lfw.bin, cfp_fp.bin … beside train.rec
            shipped += sorted(raw.glob("*.bin"))
        for path in shipped:
            if path.stem in result.reports:
                log.warning(
                    "align: %s ignored: %s was aligned from its raw release", path, path.stem
                )
                continue
            result.shipped_bins[path.stem] = len(load_bin(path))  # validates it, safely
            shutil.copyfile(path, eval_dir / path.name)
        for src, rel in protocol_files(raw):
            (eval_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, eval_dir / rel)
        write_dataset_label(raw, eval_dir)
    shutil.rmtree(work, ignore_errors=True)
    return result
