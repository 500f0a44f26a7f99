"""Align a SynthFace-style release: warp every frame to the ArcFace template.

Training frames become an insightface ``train.rec`` (classes numbered 0..C-1 in order of
appearance); an LFW-layout verification set becomes a ``.bin`` pair set, the format every
insightface evaluation reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from arcflow.align.imageio import decode_image
from arcflow.align.template import warp_face
from arcflow.data.binpairs import save_bin
from arcflow.data.protocols.ijb import read_name_5pts_score
from arcflow.data.protocols.lfw import image_path, read_pairs
from arcflow.data.recordio import write_face_dataset
from arcflow.data.synthface_release import iter_release
from arcflow.data.synthface_sets import LANDMARKS_FILE
from arcflow.errors import DataFormatError
from arcflow.progress import progress


def _aligned_jpeg(jpeg: bytes, landmarks: np.ndarray, size: int, quality: int, where: str) -> bytes:
    # BadImage (a DataFormatError) names ``where`` and its reason: "<where>: corrupt image: …"
    bgr = decode_image(jpeg, where=where)
    crop = warp_face(bgr, landmarks, size)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataFormatError(f"{where}: JPEG encoding of the aligned crop failed")
    return buf.tobytes()


@dataclass
class AlignReport:
    """What an alignment pass did: counts, failures by reason, the first few failures."""

    total: int = 0
    aligned: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)

    def fail(self, message: str, reason: str) -> None:
        """Record one image that could not be aligned, and why."""
        self.failures.append((reason, message))

    @property
    def failed(self) -> list[str]:
        """The failure messages, in order."""
        return [message for _, message in self.failures]

    def failure_lines(self) -> list[str]:
        """``reason<TAB>message`` per failed image (the stage's failure report)."""
        return [f"{reason}\t{message}" for reason, message in self.failures]

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "aligned": self.aligned,
            "failed": len(self.failures),
            "failed_by_reason": dict(sorted(Counter(r for r, _ in self.failures).items())),
        }

    def check(self, max_bad_fraction: float, where: Path) -> None:
        """Raise if more than ``max_bad_fraction`` of the images could not be aligned."""
        if self.total and len(self.failures) / self.total > max_bad_fraction:
            raise DataFormatError(
                f"{where}: {len(self.failures)} of {self.total} images could not be aligned "
                f"(more than align.max_bad_fraction={max_bad_fraction}); "
                f"first: {self.failures[0][1]}"
            )


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


def align_training_split(
    rec: Path, out_dir: Path, *, size: int = 112, quality: int = 95, max_bad_fraction: float = 0.0
) -> AlignReport:
    """Write ``out_dir/train.rec|.idx|property`` from the unaligned ``rec``.

    Undecodable images are skipped and counted; more than ``max_bad_fraction`` of them fails.
    Classes are numbered 0..C-1 in order of first appearance (identities must be grouped).
    """
    report = AlignReport()

    def crops() -> Iterator[tuple[str, bytes]]:
        frames = progress(iter_release(rec), desc="align train", unit="img")
        for position, (name, _number, jpeg, landmarks) in enumerate(frames):
            report.total += 1
            where = f"{rec}: record {position}"
            try:
                crop = _aligned_jpeg(jpeg, landmarks, size, quality, where)
            except DataFormatError as exc:
                report.fail(str(exc), getattr(exc, "reason", "unreadable"))
                continue
            report.aligned += 1
            yield name, crop

    write_face_dataset(out_dir, contiguous_labels(crops()), image_size=(size, size))
    report.check(max_bad_fraction, rec)
    return report


def read_annotations(path: Path) -> dict[str, np.ndarray]:
    """Ground-truth 5-point landmarks by relative image name (IJB ``name_5pts_score`` format)."""
    points = read_name_5pts_score(path)
    return dict(zip(points.names.tolist(), points.landmarks, strict=True))


def align_lfw(lfw_dir: Path, out_bin: Path, *, size: int = 112, quality: int = 95) -> int:
    """Align the pairs of an LFW-layout release (``pairs.txt`` + image tree) into a ``.bin``.

    Landmarks come from ``landmarks_5pts.txt`` next to ``pairs.txt``. Every image of the
    protocol must align: a pair set with holes would change the benchmark. Returns #pairs.
    """
    protocol = read_pairs(lfw_dir / "pairs.txt")
    landmarks_file = lfw_dir / LANDMARKS_FILE
    landmarks = read_annotations(landmarks_file)
    crops: dict[str, bytes] = {}
    images: list[bytes] = []
    for pair in progress(protocol.pairs, desc="align lfw", unit="pair"):
        for name, number in ((pair.name1, pair.n1), (pair.name2, pair.n2)):
            rel = image_path(name, number)
            if rel not in crops:
                if rel not in landmarks:
                    raise DataFormatError(f"{landmarks_file}: no landmarks for {rel}")
                jpeg = (lfw_dir / rel).read_bytes()
                crops[rel] = _aligned_jpeg(jpeg, landmarks[rel], size, quality, str(lfw_dir / rel))
            images.append(crops[rel])
    save_bin(out_bin, images, [p.same for p in protocol.pairs])
    return len(protocol.pairs)
