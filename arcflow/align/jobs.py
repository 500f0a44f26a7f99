"""What to align: the training set and every evaluation set found in a raw release.

An :class:`AlignJob` is a named, ordered list of images plus what to write from them:

- ``train``: a training set, either an unaligned ``train.rec`` whose records carry their
  landmarks (SynthFace) or an ``<identity>/<image>`` folder (faces found by a detector);
  written as an insightface ``train.rec``;
- ``pairs``: a verification set from its raw release (LFW ``pairs.txt``, AgeDB-30's ``.mat``,
  CFP's FF/FP splits), written as insightface's ``<name>.bin`` in protocol order;
- ``set``: an evaluation set addressed by image name (IJB loose crops, MegaFace, YTF frames),
  written as an :mod:`aligned image set <arcflow.data.imageset>` ``sets/<name>``.

Evaluation-set images take their 5 points from the release's annotations when it has them
(5-point files; AgeDB's 68-point ``.pts``), else from the detector; every one of them must
yield a crop (centre crop when no face).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from arcflow.data.imagefolder import IMAGE_EXTENSIONS, scan_image_folder
from arcflow.data.protocols import agedb, calfw
from arcflow.data.protocols.agedb import five_points, read_agedb_protocol, read_pts
from arcflow.data.protocols.cfp import CFPProtocol, read_cfp
from arcflow.data.protocols.ijb import read_name_5pts_score
from arcflow.data.protocols.lfw import image_path as lfw_image
from arcflow.data.protocols.lfw import read_pairs
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


Triples = list[tuple[str, str, bool]]  # (image name, image name, same identity)
Annotations = dict[str, tuple[float, ...]]


AnnotationReader = Callable[[Path, Path, list[str]], Annotations]  # (set root, images, names)


def five_point_file(rel: str) -> AnnotationReader:
    """Annotations from an IJB-format ``name x1 y1 … x5 y5 score`` file at ``root/rel``."""

    def read(root: Path, _images: Path, _names: list[str]) -> Annotations:
        path = root / rel
        if not path.exists():
            return {}
        points = read_name_5pts_score(path)
        return {
            _checked_name(str(name), path): tuple(float(v) for v in np.asarray(lm).ravel())
            for name, lm in zip(points.names.tolist(), points.landmarks, strict=True)
        }

    return read


def pts68_sidecars(_root: Path, images: Path, names: list[str]) -> Annotations:
    """AgeDB: each image's 68 iBUG points in ``<image>.pts`` beside it, reduced to insightface's
    5 (eye centres, nose tip, mouth corners); images without a ``.pts`` are detected."""
    found: Annotations = {}
    for name in names:
        pts = (images / name).with_suffix(".pts")
        if pts.exists():
            found[name] = tuple(float(v) for v in five_points(read_pts(pts)).ravel())
    return found


def lfw_pairs(root: Path) -> Triples:
    """LFW ``pairs.txt``, in file (= fold) order."""
    protocol = read_pairs(root / "pairs.txt")
    return [(lfw_image(p.name1, p.n1), lfw_image(p.name2, p.n2), p.same) for p in protocol.pairs]


def agedb_pairs(root: Path) -> Triples:
    """AgeDB-30's protocol ``.mat``: split 1's 600 pairs, then split 2's, …"""
    splits = read_agedb_protocol(root / agedb.PROTOCOL_FILE)
    return [
        (agedb.image_path(p.first.name), agedb.image_path(p.second.name), p.same)
        for split in splits
        for p in split.pairs
    ]


def cfp_pairs(protocol: CFPProtocol) -> Callable[[Path], Triples]:
    """CFP's ``FF`` or ``FP`` protocol, split by split (same pairs, then different pairs)."""

    def read(root: Path) -> Triples:
        return [(p.path1, p.path2, p.same) for p in read_cfp(root, protocol)]

    return read


def cross_lfw_pairs(dataset: calfw.Dataset) -> Callable[[Path], Triples]:
    """CALFW / CPLFW ``pairs_<DATASET>.txt`` in 10-fold order (fold k: its 300 positives,
    then its 300 negatives), so contiguous 10-fold evaluation sees both classes per fold."""

    def read(root: Path) -> Triples:
        path = root / f"pairs_{dataset}.txt"
        pairs = calfw.read_pairs(path, dataset)
        try:
            order = calfw.fold_order(pairs)
        except ValueError as exc:
            raise DataFormatError(f"{path}: {exc}") from None
        return [(pairs[i].name1, pairs[i].name2, pairs[i].same) for i in order]

    return read


#: SynthFace's sets (and any release laid out like them) ship ``landmarks_5pts.txt``.
_SYNTHFACE_POINTS = five_point_file("landmarks_5pts.txt")


@dataclass(frozen=True)
class EvalLayout:
    """Where an evaluation set sits in a release and how its protocol names its images.

    ``root`` is relative to the release; ``marker`` (relative to ``root``) is the protocol
    file whose presence means the release has the set; image names are relative to
    ``root/images``. Pair sets (``pairs``) align the images
    their protocol names, in protocol order, into ``<name>.bin``; other sets align the images
    their annotations list, or every image under ``root``, into an image set.
    """

    name: str
    root: str
    marker: str
    images: str = "."
    annotations: AnnotationReader = _SYNTHFACE_POINTS
    pairs: Callable[[Path], Triples] | None = None
    protocol: tuple[str, ...] = ()  # globs (under root) the evaluate stage needs beside the crops


#: The evaluation sets the align stage looks for, in the layouts of their real releases.
EVAL_LAYOUTS = (
    EvalLayout("lfw", "lfw", "pairs.txt", pairs=lfw_pairs),
    EvalLayout(
        "agedb_30", "agedb", agedb.PROTOCOL_FILE, annotations=pts68_sidecars, pairs=agedb_pairs
    ),
    EvalLayout("cfp_fp", "cfp", "Protocol/Pair_list_P.txt", pairs=cfp_pairs("FP")),
    EvalLayout("cfp_ff", "cfp", "Protocol/Pair_list_F.txt", pairs=cfp_pairs("FF")),
    EvalLayout(
        "calfw", "calfw", "pairs_CALFW.txt", images="images", pairs=cross_lfw_pairs("CALFW")
    ),
    EvalLayout(
        "cplfw", "cplfw", "pairs_CPLFW.txt", images="images", pairs=cross_lfw_pairs("CPLFW")
    ),
    EvalLayout(
        "ijbb",
        "ijb/IJBB",
        "meta/ijbb_template_pair_label.txt",
        images="loose_crop",
        annotations=five_point_file("meta/ijbb_name_5pts_score.txt"),
        protocol=("meta/*.txt", "meta/*.csv"),
    ),
    EvalLayout(
        "ijbc",
        "ijb/IJBC",
        "meta/ijbc_template_pair_label.txt",
        images="loose_crop",
        annotations=five_point_file("meta/ijbc_name_5pts_score.txt"),
        protocol=("meta/*.txt", "meta/*.csv"),
    ),
    EvalLayout(
        "megaface",
        "megaface",
        "templatelists/facescrub_features_list.json",
        protocol=("templatelists/*.json*", "*_noises.txt"),
    ),
    EvalLayout("ytf", "ytf", "splits.txt", protocol=("splits.txt",)),
    EvalLayout(  # frames extracted from the clips: frames/<video>.mp4/<n>.jpg
        "iqiyi_vid", "iqiyi_vid", "gt_v2/val_v2.txt", images="frames", protocol=("gt_v2/*.txt",)
    ),
    EvalLayout(  # DeepGlint's test labels are not public: labels.txt marks the probe images
        "trillion_pairs",
        "trillion_pairs",
        "filelist.txt",
        protocol=("filelist.txt", "labels.txt"),
    ),
)


def eval_job(raw: Path, layout: EvalLayout) -> AlignJob:
    """The evaluation set ``layout`` of the release at ``raw`` (its marker file must exist)."""
    root = raw / layout.root
    images = root / layout.images
    pairs: tuple[tuple[int, int, bool], ...] = ()
    if layout.pairs is not None:
        sides = layout.pairs(root)
        marker = root / layout.marker
        names = list(dict.fromkeys(_checked_name(n, marker) for a, b, _ in sides for n in (a, b)))
        position = {name: i for i, name in enumerate(names)}
        pairs = tuple((position[a], position[b], same) for a, b, same in sides)
        annotations = layout.annotations(root, images, names)
    else:
        annotations = layout.annotations(root, images, [])
        names = list(annotations) or image_files(images)
    if not names:
        raise DataFormatError(f"{images}: evaluation set {layout.name} has no images")
    items = tuple(Item(name, landmarks=annotations.get(name)) for name in names)
    return AlignJob(layout.name, images, items, "pairs" if pairs else "set", pairs)


def protocol_files(raw: Path) -> list[tuple[Path, Path]]:
    """``(source, destination)`` of every protocol file the evaluate stage needs.

    Destinations are relative to the evaluation output: ``protocols/<set>/<path under root>``.
    """
    found = []
    for layout in EVAL_LAYOUTS:
        root = raw / layout.root
        if (root / layout.marker).is_file():
            for pattern in layout.protocol:
                for src in sorted(root.glob(pattern)):
                    found.append((src, Path("protocols", layout.name, src.relative_to(root))))
    return found


def eval_jobs(raw: Path) -> list[AlignJob]:
    """Every evaluation set of :data:`EVAL_LAYOUTS` present in the release at ``raw``."""
    return [
        eval_job(raw, layout)
        for layout in EVAL_LAYOUTS
        if (raw / layout.root / layout.marker).is_file()
    ]
