"""What to align: the training set and every evaluation set found in a raw release.

An :class:`AlignJob` is a named, ordered list of images plus what to write from them:

- ``train``: a training set, either an unaligned ``train.rec`` whose records carry their
  landmarks (SynthFace) or an ``<identity>/<image>`` folder (faces found by a detector);
  written as an insightface ``train.rec``;
- ``pairs``: an LFW-layout set (image tree + ``pairs.txt``), written as ``<name>.bin``;
- ``set``: an evaluation set addressed by image name (IJB loose crops, MegaFace, YTF frames),
  written as an :mod:`aligned image set <arcflow.data.imageset>` ``sets/<name>``.

Evaluation-set images take their 5 points from the release's annotation file when it has one,
else from the detector; every one of them must yield a crop (centre crop when no face).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from arcflow.data.imagefolder import IMAGE_EXTENSIONS, scan_image_folder
from arcflow.data.protocols.ijb import read_name_5pts_score
from arcflow.data.protocols.lfw import image_path, read_pairs
from arcflow.data.recordio import RecordReader
from arcflow.errors import DataFormatError

Output = Literal["train", "pairs", "set"]


@dataclass(frozen=True)
class Item:
    """One image: a record key of the job's ``.rec`` or a path relative to the job's root.

    ``group`` is the identity of a training image (records carry theirs); ``landmarks`` are
    10 floats ``x1, y1, … x5, y5`` from annotations, or None when the record holds them or
    a detector must find them.
    """

    ref: int | str
    group: str = ""
    landmarks: tuple[float, ...] | None = None


@dataclass(frozen=True)
class AlignJob:
    """A named list of images to align and the output they make."""

    name: str
    root: Path  # the unaligned .rec (record items) or the folder that item paths are under
    items: tuple[Item, ...]
    output: Output
    pairs: tuple[tuple[int, int, bool], ...] = ()  # output "pairs": item indices + same/diff

    @property
    def complete(self) -> bool:
        """Evaluation sets: every image must yield a crop (a centre crop when no face)."""
        return self.output != "train"

    @property
    def needs_detector(self) -> bool:
        return any(item.landmarks is None and isinstance(item.ref, str) for item in self.items)

    def fingerprint(self) -> str:
        """Changes whenever the inputs change: names, annotations, file sizes and mtimes."""
        digest = hashlib.sha256(json.dumps([self.name, str(self.root), self.output]).encode())
        digest.update(json.dumps(self.pairs).encode())
        stat = self.root.stat()
        digest.update(f"{stat.st_size} {stat.st_mtime_ns}".encode())
        for item in self.items:
            digest.update(json.dumps([item.ref, item.group, item.landmarks]).encode())
            if isinstance(item.ref, str):
                stat = (self.root / item.ref).stat()
                digest.update(f"{stat.st_size} {stat.st_mtime_ns}".encode())
        return digest.hexdigest()


def release_job(rec: Path) -> AlignJob:
    """The unaligned training frames of a release (landmarks in each record's label)."""
    with RecordReader(rec) as reader:
        keys = reader.keys
    return AlignJob("train", rec, tuple(Item(key) for key in keys), "train")


def folder_job(root: Path) -> AlignJob:
    """An ``<identity>/<image>`` folder; identities in name order, faces from a detector."""
    index = scan_image_folder(root)
    items = tuple(
        Item(path, group=index.classes[label])
        for path, label in zip(index.paths, index.labels, strict=True)
    )
    return AlignJob("train", root, items, "train")


@dataclass(frozen=True)
class EvalLayout:
    """Where an evaluation set sits in a release (paths relative to the release root)."""

    name: str
    marker: str  # protocol file whose presence means the release has this set
    images: str  # folder that the set's image names are relative to
    landmarks: str  # 5-point annotations (IJB ``name_5pts_score`` format), when shipped
    output: Output = "set"


#: The evaluation sets the align stage looks for, in the layouts of their real releases.
EVAL_LAYOUTS = (
    EvalLayout("lfw", "lfw/pairs.txt", "lfw", "lfw/landmarks_5pts.txt", output="pairs"),
    EvalLayout(
        "ijbb",
        "ijb/IJBB/meta/ijbb_template_pair_label.txt",
        "ijb/IJBB/loose_crop",
        "ijb/IJBB/meta/ijbb_name_5pts_score.txt",
    ),
    EvalLayout(
        "ijbc",
        "ijb/IJBC/meta/ijbc_template_pair_label.txt",
        "ijb/IJBC/loose_crop",
        "ijb/IJBC/meta/ijbc_name_5pts_score.txt",
    ),
    EvalLayout(
        "megaface",
        "megaface/templatelists/facescrub_features_list.json",
        "megaface",
        "megaface/landmarks_5pts.txt",
    ),
    EvalLayout("ytf", "ytf/splits.txt", "ytf", "ytf/landmarks_5pts.txt"),
)


def _checked_name(name: str, where: Path) -> str:
    """A relative image name that stays inside its folder."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise DataFormatError(f"{where}: image name {name!r} must be a relative path inside it")
    return name


def image_files(root: Path) -> list[str]:
    """Every image under ``root`` (relative posix paths, sorted, hidden entries skipped)."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        found += [
            (rel / f).as_posix()
            for f in files
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def _annotations(path: Path) -> dict[str, tuple[float, ...]]:
    if not path.exists():
        return {}
    points = read_name_5pts_score(path)
    return {
        _checked_name(str(name), path): tuple(float(v) for v in np.asarray(lm).ravel())
        for name, lm in zip(points.names.tolist(), points.landmarks, strict=True)
    }


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def eval_job(raw: Path, layout: EvalLayout) -> AlignJob:
    """The evaluation set ``layout`` of the release at ``raw`` (its marker file must exist)."""
    root = raw / layout.images
    annotations = _annotations(raw / layout.landmarks)
    pairs: tuple[tuple[int, int, bool], ...] = ()
    if layout.output == "pairs":
        protocol = read_pairs(raw / layout.marker)
        sides = [
            (image_path(p.name1, p.n1), image_path(p.name2, p.n2), p.same) for p in protocol.pairs
        ]
        names = _unique(_checked_name(n, raw / layout.marker) for a, b, _ in sides for n in (a, b))
        position = {name: i for i, name in enumerate(names)}
        pairs = tuple((position[a], position[b], same) for a, b, same in sides)
    elif annotations:
        names = list(annotations)
    else:
        names = image_files(root)
    if not names:
        raise DataFormatError(f"{root}: evaluation set {layout.name} has no images")
    items = tuple(Item(name, landmarks=annotations.get(name)) for name in names)
    return AlignJob(layout.name, root, items, layout.output, pairs)


def eval_jobs(raw: Path) -> list[AlignJob]:
    """Every evaluation set of :data:`EVAL_LAYOUTS` present in the release at ``raw``."""
    return [eval_job(raw, layout) for layout in EVAL_LAYOUTS if (raw / layout.marker).is_file()]
