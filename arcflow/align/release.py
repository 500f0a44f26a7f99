"""Align a SynthFace-style release: warp every frame to the ArcFace template.

Training frames become an insightface ``train.rec`` (classes renumbered 0..C-1 in name
order); the verification protocol becomes a ``.bin`` pair set, the format every
insightface evaluation reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from arcflow.align.template import warp_face
from arcflow.data.binpairs import save_bin
from arcflow.data.protocols.lfw import read_pairs
from arcflow.data.recordio import write_face_dataset
from arcflow.data.synthface_release import iter_release
from arcflow.errors import DataFormatError
from arcflow.progress import progress


def _aligned_jpeg(jpeg: bytes, landmarks: np.ndarray, size: int, quality: int, where: str) -> bytes:
    bgr = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataFormatError(f"{where}: not a decodable image")
    crop = warp_face(bgr, landmarks, size)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataFormatError(f"{where}: JPEG encoding of the aligned crop failed")
    return buf.tobytes()


def align_training_split(rec: Path, out_dir: Path, *, size: int = 112, quality: int = 95) -> int:
    """Write ``out_dir/train.rec|.idx|property`` from the unaligned ``rec``; returns #images."""

    def samples() -> Iterator[tuple[int, bytes]]:
        label, previous = -1, None
        frames = progress(iter_release(rec), desc="align train", unit="img")
        for position, (name, _number, jpeg, landmarks) in enumerate(frames):
            if name != previous:
                if previous is not None and name < previous:
                    raise DataFormatError(f"{rec}: record {position}: identities not grouped")
                label, previous = label + 1, name
            yield label, _aligned_jpeg(jpeg, landmarks, size, quality, f"{rec}: record {position}")

    images, _classes = write_face_dataset(out_dir, samples(), image_size=(size, size))
    return images


def align_pair_set(
    rec: Path, pairs_txt: Path, out_bin: Path, *, size: int = 112, quality: int = 95
) -> int:
    """Write the pairs of ``pairs_txt`` as an aligned ``.bin`` pair set; returns #pairs."""
    protocol = read_pairs(pairs_txt)
    needed = {(p.name1, p.n1) for p in protocol.pairs} | {(p.name2, p.n2) for p in protocol.pairs}
    crops: dict[tuple[str, int], bytes] = {}
    for position, (name, number, jpeg, landmarks) in enumerate(
        progress(iter_release(rec), desc="align pairs", unit="img")
    ):
        if (name, number) in needed:
            crops[(name, number)] = _aligned_jpeg(
                jpeg, landmarks, size, quality, f"{rec}: record {position}"
            )
    missing = sorted(needed - crops.keys())
    if missing:
        name, number = missing[0]
        raise DataFormatError(
            f"{pairs_txt}: image {name} #{number} is not in {rec} ({len(missing)} missing)"
        )
    images: list[bytes] = []
    for pair in protocol.pairs:
        images += [crops[(pair.name1, pair.n1)], crops[(pair.name2, pair.n2)]]
    save_bin(out_bin, images, [p.same for p in protocol.pairs])
    return len(protocol.pairs)
