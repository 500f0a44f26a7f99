"""SynthFace evaluation sets, each written in the layout of the real release it stands for.

Every set uses its own block of identities (disjoint from training and from each other) and
ships 5-point ground truth in the IJB ``name x1 y1 … x5 y5 score`` format, so the align
stage can use annotations where a real release would need a detector.

- ``lfw``: LFW tree ``lfw/<name>/<name>_%04d.jpg`` + ``pairs.txt`` (10 folds).
- ``cfp_fp`` / ``agedb_30``: insightface ``.bin`` pair sets, already aligned, as the
  insightface training releases ship them: frontal-vs-near-profile pairs and a hard set
  (strongest nuisance).
- ``ijb``: IJB-C layout (``IJBC/meta/ijbc_*.txt``, ``IJBC/loose_crop/``): 6 templates per
  subject, each one media of 2 frames; 1:1 pairs: every pair of templates (same subject:
  genuine, else impostor: 178,200 at 100 subjects, resolving FAR 1e-5); NIST's 1:N gallery
  (G1, G2) and probe CSVs beside them.
- ``megaface``: a FaceScrub-like probe set and single-image distractors with the devkit's
  feature-list JSONs.
- ``ytf``: YouTube Faces frames ``frame_images_DB/<name>/<video>/<video>.<frame>.jpg`` +
  ``splits.txt``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from arcflow.config import SynthFaceParams
from arcflow.data.binpairs import save_bin
from arcflow.data.protocols import ijb, megaface, ytf
from arcflow.data.protocols.lfw import Pair, PairsProtocol, image_path, write_pairs
from arcflow.data.synthface import render
from arcflow.data.synthface_identity import identity_params
from arcflow.errors import DataFormatError
from arcflow.face_template import warp_face

EVAL_SETS = ("lfw", "cfp_fp", "agedb_30", "ijb", "megaface", "ytf")
FRONTAL_YAW, PROFILE_YAW = (0.0, 5.0), (35.0, 45.0)
LANDMARKS_FILE = "landmarks_5pts.txt"


def identity_name(identity: int) -> str:
    """Release-wide name of an identity (LFW's ``name`` column)."""
    return f"synth_{identity:05d}"


def encode_jpeg(bgr: np.ndarray, quality: int, where: str) -> bytes:
    """JPEG bytes of a BGR frame."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataFormatError(f"{where}: JPEG encoding failed")
    return buf.tobytes()


def jpeg_quality_for(seed: int, difficulty: float, best: int, *key: int) -> int:
    """Per-image JPEG quality, a compression nuisance: up to ``45 * difficulty`` below ``best``."""
    drop = np.random.default_rng([seed, *key, 2]).uniform(0.0, 45.0 * difficulty)
    return max(30, round(best - drop))


@dataclass
class SetWriter:
    """Renders images of one set into ``root`` and collects their landmarks."""

    params: SynthFaceParams
    root: Path
    salt: int
    difficulty: float = 0.5  # the set's nuisance strength (params.eval_difficulty)
    names: list[str] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)

    def render(
        self,
        identity: int,
        index: int,
        *,
        difficulty: float | None = None,
        yaw_deg: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` of ``identity``: a pure function of (seed, set, identity, index)."""
        rng = np.random.default_rng([self.params.seed, self.salt, identity, index])
        return render(
            identity_params(self.params.seed, identity),
            rng,
            self.params.frame_size,
            difficulty=self.difficulty if difficulty is None else difficulty,
            yaw_deg=yaw_deg,
        )

    def save(self, rel: str, bgr: np.ndarray, lm: np.ndarray) -> None:
        """Write ``root/rel`` as JPEG and remember its landmarks."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        quality = jpeg_quality_for(
            self.params.seed,
            self.params.difficulty,
            self.params.jpeg_quality,
            self.salt,
            zlib.crc32(rel.encode()),
        )
        path.write_bytes(encode_jpeg(bgr, quality, str(path)))
        self.names.append(rel)
        self.landmarks.append(lm)

    def write_landmarks(self, path: Path | None = None) -> int:
        """The collected landmarks as an IJB-style 5-point file (score 1: ground truth)."""
        n = len(self.names)
        ijb.write_name_5pts_score(
            path or self.root / LANDMARKS_FILE,
            ijb.FivePoints(
                names=np.array(self.names),
                landmarks=np.stack(self.landmarks).astype(np.float32),
                scores=np.ones(n, dtype=np.float32),
            ),
        )
        return n


def fold_pairs(
    rng: np.random.Generator,
    identities: range,
    folds: int,
    per_fold: int,
    n_a: int,
    n_b: int,
    *,
    distinct: bool,
) -> list[tuple[int, int, int, int, bool]]:
    """Per fold (disjoint identity groups) ``per_fold`` same then ``per_fold`` different pairs.

    A pair is (identity1, image index in [0, n_a), identity2, image index in [0, n_b), same);
    ``distinct`` forbids a same pair from using one image twice (one image list: n_a == n_b).
    """
    if len(identities) < 2 * folds:
        raise DataFormatError(f"need at least {2 * folds} identities for {folds} folds")
    groups = np.array_split(rng.permutation(np.asarray(identities)), folds)
    pairs: list[tuple[int, int, int, int, bool]] = []
    for group in groups:
        for _ in range(per_fold):
            k = int(rng.choice(group))
            if distinct:
                a, b = (int(v) for v in rng.choice(n_a, size=2, replace=False))
            else:
                a, b = int(rng.integers(n_a)), int(rng.integers(n_b))
            pairs.append((k, a, k, b, True))
        for _ in range(per_fold):
            k1, k2 = (int(v) for v in rng.choice(group, size=2, replace=False))
            pairs.append((k1, int(rng.integers(n_a)), k2, int(rng.integers(n_b)), False))
    return pairs


def _rng(params: SynthFaceParams, salt: int) -> np.random.Generator:
    return np.random.default_rng([params.seed, salt, 7])


def write_lfw(params: SynthFaceParams, out: Path, identities: range) -> dict[str, int]:
    """LFW layout: image tree, ``pairs.txt`` and ground-truth landmarks."""
    writer = SetWriter(params, out, salt=1, difficulty=params.eval_difficulty.lfw)
    n = params.val_images_per_identity
    for k in identities:
        for j in range(n):
            writer.save(image_path(identity_name(k), j + 1), *writer.render(k, j))
    pairs = fold_pairs(
        _rng(params, 1),
        identities,
        params.val_folds,
        params.val_pairs_per_fold,
        n,
        n,
        distinct=True,
    )
    protocol = PairsProtocol(
        params.val_folds,
        params.val_pairs_per_fold,
        tuple(
            Pair(identity_name(k1), a + 1, identity_name(k2), b + 1) for k1, a, k2, b, _ in pairs
        ),
    )
    write_pairs(out / "pairs.txt", protocol)
    return {"images": writer.write_landmarks(), "pairs": len(pairs)}


View = Callable[["SetWriter", int, int], tuple[np.ndarray, np.ndarray]]


def _write_aligned_bin(
    params: SynthFaceParams,
    path: Path,
    identities: range,
    salt: int,
    sides: Sequence[tuple[View, int]],
    difficulty: float,
) -> dict[str, int]:
    """A pre-aligned ``.bin`` pair set (crops warped with the ground-truth landmarks).

    ``sides`` holds one ``(view, n_images)`` for pairs within one image list, or two for pairs
    across lists (the first image of a pair from the first, e.g. frontal against profile).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = SetWriter(params, path.parent, salt=salt, difficulty=difficulty)
    crops: dict[tuple[int, int, int], bytes] = {}
    last = len(sides) - 1

    def crop(side: int, k: int, j: int) -> bytes:
        if (side, k, j) not in crops:
            bgr, lm = sides[side][0](writer, k, j)
            crops[(side, k, j)] = encode_jpeg(warp_face(bgr, lm, 112), 95, str(path))
        return crops[(side, k, j)]

    pairs = fold_pairs(
        _rng(params, salt), identities, params.val_folds, params.val_pairs_per_fold,
        sides[0][1], sides[last][1], distinct=last == 0,
    )  # fmt: skip
    images: list[bytes] = []
    for k1, a, k2, b, _ in pairs:
        images += [crop(0, k1, a), crop(last, k2, b)]
    save_bin(path, images, [same for *_, same in pairs])
    return {"images": len(crops), "pairs": len(pairs)}


def write_cfp_fp(params: SynthFaceParams, path: Path, identities: range) -> dict[str, int]:
    """Cross-pose pairs like CFP-FP: a frontal image against a near-profile one."""

    def frontal(w: SetWriter, k: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        return w.render(k, j, yaw_deg=FRONTAL_YAW)

    def profile(w: SetWriter, k: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        return w.render(k, 1000 + j, yaw_deg=PROFILE_YAW)

    return _write_aligned_bin(
        params,
        path,
        identities,
        2,
        [(frontal, 10), (profile, 4)],
        params.eval_difficulty.cfp_fp,
    )


def write_agedb_30(params: SynthFaceParams, path: Path, identities: range) -> dict[str, int]:
    """A hard set like AgeDB-30: the strongest nuisance SynthFace draws (by default)."""

    def hard(w: SetWriter, k: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        return w.render(k, j)

    return _write_aligned_bin(
        params,
        path,
        identities,
        3,
        [(hard, params.val_images_per_identity)],
        params.eval_difficulty.agedb_30,
    )


IJB_TEMPLATES = 6  # per subject: one media of IJB_FRAMES frames each
IJB_FRAMES = 2


def write_ijb(params: SynthFaceParams, out: Path, identities: range) -> dict[str, int]:
    """IJB-C layout: :data:`IJB_TEMPLATES` templates per subject, each one media of
    :data:`IJB_FRAMES` frames; the 1:1 pairs of :func:`ijb_template_pairs`."""
    files = ijb.ijb_files(out, "ijbc")
    writer = SetWriter(params, files.loose_crop, salt=4, difficulty=params.eval_difficulty.ijb)
    names, tids = [], []
    for s, k in enumerate(identities):
        for t in range(IJB_TEMPLATES):
            for _ in range(IJB_FRAMES):
                name = f"{len(names) + 1}.jpg"
                writer.save(name, *writer.render(k, len(names)))
                names.append(name)
                tids.append(IJB_TEMPLATES * s + t + 1)
    files.face_tid_mid.parent.mkdir(parents=True, exist_ok=True)
    tid_array = np.array(tids, dtype=np.int64)
    ijb.write_face_tid_mid(
        files.face_tid_mid, ijb.FaceTidMid(np.array(names), tid_array, tid_array.copy())
    )
    writer.write_landmarks(files.name_5pts_score)
    subjects = len(identities)
    pairs = ijb_template_pairs(subjects)
    ijb.write_template_pair_label(files.template_pair_label, pairs)
    _write_ijb_1n(files, np.array(names), tid_array, subjects)
    return {
        "images": len(names),
        "templates": IJB_TEMPLATES * subjects,
        "pairs": len(pairs.labels),
    }


def ijb_template_pairs(subjects: int, per_subject: int = IJB_TEMPLATES) -> ijb.TemplatePairs:
    """Every pair of templates (subject s: templates ``per_subject·s + 1 …``): genuine when
    both are the subject's, impostor otherwise. Impostor pairs between the templates already
    embedded cost nothing more: 100 subjects × 6 templates give 178,200 of them, enough to
    resolve FAR 1e-5 (and 1,500 genuine pairs)."""
    first, second = np.triu_indices(per_subject * subjects, k=1)
    genuine = first // per_subject == second // per_subject
    order = np.concatenate((np.flatnonzero(genuine), np.flatnonzero(~genuine)))
    labels = genuine[order].astype(np.int8)
    return ijb.TemplatePairs(
        (first[order] + 1).astype(np.int64), (second[order] + 1).astype(np.int64), labels
    )


def _write_ijb_1n(files: ijb.IJBFiles, names: np.ndarray, tids: np.ndarray, subjects: int) -> None:
    """NIST's 1:N lists, as IJB-C splits them: the first template of each subject of one half
    in gallery G1, of the other half in G2; every other template is a probe (mixed), so each
    probe is mated in one gallery and unmated in the other."""
    subject = (tids - 1) // IJB_TEMPLATES
    first = (tids - 1) % IJB_TEMPLATES == 0
    header = (*ijb.CSV_KEY_COLUMNS, "SIGHTING_ID")
    for path, rows in (
        (files.gallery1, first & (subject < subjects // 2)),
        (files.gallery2, first & (subject >= subjects // 2)),
        (files.probe_mixed, ~first),
    ):
        ijb.write_template_table(
            path,
            ijb.TemplateTable(
                header,
                tids[rows].astype(np.int64),
                subject[rows].astype(np.int64) + 1,
                names[rows],
                np.arange(rows.sum()).astype(str)[:, None],
            ),
        )


def write_megaface(
    params: SynthFaceParams, out: Path, probes: range, distractors: range
) -> dict[str, int]:
    """A FaceScrub-like probe set and single-image distractors with devkit feature lists."""
    writer = SetWriter(params, out, salt=5, difficulty=params.eval_difficulty.megaface)
    probe_paths, probe_ids = [], []
    for k in probes:
        for j in range(params.val_images_per_identity):
            rel = f"{identity_name(k)}/{identity_name(k)}_{j + 1}.jpg"
            writer.save(f"facescrub_images/{rel}", *writer.render(k, j))
            probe_paths.append(rel)
            probe_ids.append(identity_name(k))
    megaface.write_feature_list(
        out / "templatelists" / megaface.FACESCRUB_LIST,
        megaface.FeatureList(tuple(probe_paths), tuple(probe_ids)),
    )
    distractor_paths = []
    for k in distractors:
        rel = f"{k % 100:02d}/{identity_name(k)}_1.jpg"
        writer.save(f"megaface_images/{rel}", *writer.render(k, 0))
        distractor_paths.append(rel)
    sizes = [size for size in megaface.SIZES if size <= len(distractor_paths)]
    for size in sizes:
        megaface.write_feature_list(
            out / "templatelists" / megaface.megaface_list_name(size),
            megaface.FeatureList(tuple(distractor_paths[:size])),
        )
    writer.write_landmarks()
    return {
        "probes": len(probe_paths),
        "distractors": len(distractor_paths),
        "distractor_sizes": len(sizes),
    }


def write_ytf(params: SynthFaceParams, out: Path, identities: range) -> dict[str, int]:
    """YouTube Faces layout: 3 videos per identity of 4 frames each, and ``splits.txt``."""
    videos, frames = 3, 4
    writer = SetWriter(params, out, salt=6, difficulty=params.eval_difficulty.ytf)
    for k in identities:
        for v in range(videos):
            for f in range(frames):
                rel = f"frame_images_DB/{identity_name(k)}/{v}/{v}.{f + 1}.jpg"
                writer.save(rel, *writer.render(k, v * frames + f))
    pairs = fold_pairs(
        _rng(params, 6),
        identities,
        params.val_folds,
        params.val_pairs_per_fold,
        videos,
        videos,
        distinct=True,
    )
    per_split = 2 * params.val_pairs_per_fold
    ytf.write_splits(
        out / "splits.txt",
        ytf.YTFSplits(
            tuple(
                ytf.VideoPair(
                    i // per_split + 1,
                    i % per_split + 1,
                    f"{identity_name(k1)}/{a}",
                    f"{identity_name(k2)}/{b}",
                    same,
                )
                for i, (k1, a, k2, b, same) in enumerate(pairs)
            )
        ),
    )
    return {
        "videos": videos * len(identities),
        "frames": writer.write_landmarks(),
        "pairs": len(pairs),
    }


def identity_blocks(params: SynthFaceParams) -> dict[str, range]:
    """Disjoint identity ranges: training first, then one block per evaluation set."""
    blocks = {"train": range(params.train_identities)}
    start = params.train_identities
    for name in (*EVAL_SETS, "megaface_distractors"):
        size = (
            params.megaface_distractors
            if name == "megaface_distractors"
            else (params.val_identities)
        )
        blocks[name] = range(start, start + size)
        start += size
    return blocks


def write_eval_sets(params: SynthFaceParams, out: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """Write every evaluation set of ``params.eval_sets`` under ``out``; yield their counts."""
    ids = identity_blocks(params)
    writers: dict[str, Callable[[], dict[str, int]]] = {
        "lfw": lambda: write_lfw(params, out / "lfw", ids["lfw"]),
        "cfp_fp": lambda: write_cfp_fp(params, out / "bins" / "cfp_fp.bin", ids["cfp_fp"]),
        "agedb_30": lambda: write_agedb_30(params, out / "bins" / "agedb_30.bin", ids["agedb_30"]),
        "ijb": lambda: write_ijb(params, out / "ijb", ids["ijb"]),
        "megaface": lambda: write_megaface(
            params, out / "megaface", ids["megaface"], ids["megaface_distractors"]
        ),
        "ytf": lambda: write_ytf(params, out / "ytf", ids["ytf"]),
    }
    for name in params.eval_sets:
        yield name, writers[name]()
