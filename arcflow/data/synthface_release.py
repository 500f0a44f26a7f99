"""Write SynthFace as a dataset release in real formats, like a downloaded dataset.

``<out>/train.rec|.idx``: MXNet RecordIO of UNALIGNED training frames; each record's
IRHeader carries an 11-float array label ``[identity, x1, y1, ..., x5, y5]`` (the 5
ground-truth landmarks), ``id`` = record key and ``id2`` = the image's 1-based number within
its identity (insightface's readers see the first label element, the class). The evaluation
sets follow in the layouts of their real releases (:mod:`arcflow.data.synthface_sets`):
``lfw/``, ``bins/cfp_fp.bin``, ``bins/agedb_30.bin``, ``ijb/``, ``megaface/``, ``ytf/``.
``<out>/meta.json`` records the parameters and counts. All identity blocks are disjoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from arcflow.atomic import write_json
from arcflow.config import SynthFaceParams
from arcflow.data.recordio import IRHeader, RecordReader, RecordWriter, pack, unpack
from arcflow.data.synthface import SynthFaceSpec, iter_images
from arcflow.data.synthface_sets import (
    encode_jpeg,
    identity_blocks,
    identity_name,
    jpeg_quality_for,
    write_eval_sets,
)
from arcflow.errors import DataFormatError
from arcflow.progress import progress

LABEL_SIZE = 11


def write_train_split(
    path: Path, spec: SynthFaceSpec, identities: range, quality: int, desc: str
) -> int:
    """Unaligned frames with landmark labels as ``path.rec``/``path.idx``; returns #images.

    ``quality`` is the best JPEG quality; each image gets its own (:func:`jpeg_quality_for`).
    """
    total = len(identities) * spec.images_per_identity
    count = 0
    with RecordWriter(path.with_suffix(".rec"), path.with_suffix(".idx")) as writer:
        frames = iter_images(spec, identities)
        for identity, index, bgr, landmarks in progress(frames, total=total, desc=desc, unit="img"):
            q = jpeg_quality_for(spec.seed, spec.difficulty, quality, identity, index)
            jpeg = encode_jpeg(bgr, q, f"{path}: identity {identity} image {index}")
            label = (float(identity), *np.asarray(landmarks, dtype=np.float32).ravel().tolist())
            writer.write(pack(IRHeader(LABEL_SIZE, label, count, index + 1), jpeg), count)
            count += 1
    return count


def train_spec(params: SynthFaceParams) -> SynthFaceSpec:
    """What the training split is drawn from."""
    return SynthFaceSpec(
        num_identities=params.train_identities,
        images_per_identity=params.train_images_per_identity,
        frame_size=params.frame_size,
        seed=params.seed,
        difficulty=params.difficulty,
    )


def write_release(params: SynthFaceParams, out: Path) -> dict[str, object]:
    """Generate the training split and every evaluation set into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    spec = train_spec(params)
    train = identity_blocks(params)["train"]
    # Every image is drawn from its own seed, so the two halves can be made at once: the
    # training split in a second process while this one writes the evaluation sets.
    with ProcessPoolExecutor(max_workers=1) as pool:
        images = pool.submit(
            write_train_split, out / "train", spec, train, params.jpeg_quality, "synthface train"
        )
        sets = write_eval_sets(params, out)
        evaluation = dict(progress(sets, total=len(params.eval_sets), desc="synthface eval sets"))
        counts: dict[str, object] = {"train": {"identities": len(train), "images": images.result()}}
    counts.update(evaluation)
    write_json(out / "meta.json", {"dataset": "synthface", "params": params.model_dump(), **counts})
    return counts


def decode_frame(payload: bytes, where: str) -> tuple[str, int, bytes, np.ndarray]:
    """(identity name, image number, JPEG bytes, landmarks (5, 2)) of one split record."""
    header, jpeg = unpack(payload)
    if header.flag != LABEL_SIZE:
        raise DataFormatError(
            f"{where} has {header.flag} labels, expected {LABEL_SIZE} (identity + 5 landmarks)"
        )
    label = np.asarray(header.label, dtype=np.float32)
    return identity_name(int(label[0])), int(header.id2), jpeg, label[1:].reshape(5, 2)


def iter_release(rec_path: Path) -> Iterator[tuple[str, int, bytes, np.ndarray]]:
    """Yield (identity name, image number, JPEG bytes, landmarks (5, 2)) from a split .rec."""
    with RecordReader(rec_path) as reader:
        for position, payload in enumerate(reader):
            yield decode_frame(payload, f"{rec_path}: record {position}")
