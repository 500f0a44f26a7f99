"""Write SynthFace as a dataset release in real formats, like a downloaded dataset.

``<out>/train.rec|.idx`` and ``<out>/val.rec|.idx``: MXNet RecordIO of UNALIGNED JPEG
frames; each record's IRHeader carries an 11-float array label
``[identity, x1, y1, ..., x5, y5]`` (the 5 ground-truth landmarks), ``id`` = record key and
``id2`` = the image's 1-based number within its identity. insightface's readers see the
first label element, the class. ``<out>/pairs.txt``: LFW-format verification protocol
over the val identities (names ``synth_%05d``). ``<out>/meta.json``: what was generated.
Train and val identities are disjoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from arcflow.atomic import write_json
from arcflow.config import SynthFaceParams
from arcflow.data.protocols.lfw import Pair, PairsProtocol, write_pairs
from arcflow.data.recordio import IRHeader, RecordReader, RecordWriter, pack, unpack
from arcflow.data.synthface import SynthFaceSpec, iter_images
from arcflow.errors import DataFormatError
from arcflow.progress import progress

LABEL_SIZE = 11


def identity_name(identity: int) -> str:
    """Release-wide name of an identity (as in LFW's ``name`` column)."""
    return f"synth_{identity:05d}"


def _spec(params: SynthFaceParams, images_per_identity: int) -> SynthFaceSpec:
    return SynthFaceSpec(
        num_identities=params.train_identities + params.val_identities,
        images_per_identity=images_per_identity,
        frame_size=params.frame_size,
        seed=params.seed,
        difficulty=params.difficulty,
    )


def _write_split(
    path: Path, spec: SynthFaceSpec, identities: range, quality: int, desc: str
) -> int:
    total = len(identities) * spec.images_per_identity
    count = 0
    with RecordWriter(path.with_suffix(".rec"), path.with_suffix(".idx")) as writer:
        frames = iter_images(spec, identities)
        for identity, index, bgr, landmarks in progress(frames, total=total, desc=desc, unit="img"):
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise DataFormatError(f"{path}: JPEG encoding failed for {identity}/{index}")
            label = (float(identity), *np.asarray(landmarks, dtype=np.float32).ravel().tolist())
            writer.write(pack(IRHeader(LABEL_SIZE, label, count, index + 1), jpeg.tobytes()), count)
            count += 1
    return count


def sample_pairs(
    identities: range, images_per_identity: int, folds: int, per_fold: int, seed: int
) -> PairsProtocol:
    """LFW-style folds over disjoint identity groups: per fold ``per_fold`` same + diff pairs."""
    if len(identities) < 2 * folds:
        raise DataFormatError(
            f"need at least {2 * folds} val identities for {folds} folds, got {len(identities)}"
        )
    rng = np.random.default_rng([seed, 7])
    groups = np.array_split(rng.permutation(np.asarray(identities)), folds)
    pairs: list[Pair] = []
    for group in groups:
        for _ in range(per_fold):
            identity = int(rng.choice(group))
            n1, n2 = rng.choice(images_per_identity, size=2, replace=False) + 1
            pairs.append(Pair(identity_name(identity), int(n1), identity_name(identity), int(n2)))
        for _ in range(per_fold):
            a, b = rng.choice(group, size=2, replace=False)
            n1, n2 = rng.integers(1, images_per_identity + 1, size=2)
            pairs.append(Pair(identity_name(int(a)), int(n1), identity_name(int(b)), int(n2)))
    return PairsProtocol(folds, per_fold, tuple(pairs))


def write_release(params: SynthFaceParams, out: Path) -> dict[str, int]:
    """Generate train and val splits plus the val pairs protocol into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    train_ids = range(params.train_identities)
    val_ids = range(params.train_identities, params.train_identities + params.val_identities)
    n_images = {
        split: _write_split(
            out / split, _spec(params, per_identity), ids, params.jpeg_quality, f"synthface {split}"
        )
        for split, ids, per_identity in (
            ("train", train_ids, params.train_images_per_identity),
            ("val", val_ids, params.val_images_per_identity),
        )
    }
    protocol = sample_pairs(
        val_ids,
        params.val_images_per_identity,
        params.val_folds,
        params.val_pairs_per_fold,
        params.seed,
    )
    write_pairs(out / "pairs.txt", protocol)
    counts = {
        "train_images": n_images["train"],
        "train_identities": len(train_ids),
        "val_images": n_images["val"],
        "val_identities": len(val_ids),
        "val_pairs": len(protocol.pairs),
    }
    write_json(out / "meta.json", {"dataset": "synthface", "params": params.model_dump(), **counts})
    return counts


def iter_release(rec_path: Path) -> Iterator[tuple[str, int, bytes, np.ndarray]]:
    """Yield (identity name, image number, JPEG bytes, landmarks (5, 2)) from a split .rec."""
    with RecordReader(rec_path) as reader:
        for position, payload in enumerate(reader):
            header, jpeg = unpack(payload)
            if header.flag != LABEL_SIZE:
                raise DataFormatError(
                    f"{rec_path}: record {position} has {header.flag} labels, expected "
                    f"{LABEL_SIZE} (identity + 5 landmarks)"
                )
            label = np.asarray(header.label, dtype=np.float32)
            yield identity_name(int(label[0])), int(header.id2), jpeg, label[1:].reshape(5, 2)
