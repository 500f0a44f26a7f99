"""Align a run of images: decode, take or find the 5 points, warp, encode as JPEG.

:class:`Aligner` holds what one process reuses across shards: the detector (built on first
use, so annotated data never loads one) and open ``.rec`` readers. Images are decoded and
detected ``detect_batch`` at a time, so memory stays flat whatever the shard size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from arcflow.align.detectors import Detector, get_detector
from arcflow.align.jobs import AlignJob, Item
from arcflow.align.select import centre_crop_landmarks, pick_face
from arcflow.config import AlignParams
from arcflow.data.recordio import RecordReader
from arcflow.data.synthface_release import decode_frame
from arcflow.face_template import warp_face
from arcflow.imageio import BadImage, decode_image


@dataclass(frozen=True)
class Crop:
    """An aligned face: item index, identity (training sets), JPEG bytes, centre-cropped?"""

    index: int
    group: str
    jpeg: bytes
    centre_crop: bool = False


@dataclass(frozen=True)
class Failure:
    """An image that gave no crop: item index, reason (``corrupt``, ``no_face``, …), message."""

    index: int
    reason: str
    message: str


@dataclass
class _Decoded:
    index: int
    where: str
    group: str
    image: np.ndarray
    landmarks: np.ndarray | None


class Aligner:
    """Turns items of an :class:`AlignJob` into :class:`Crop` / :class:`Failure` outcomes."""

    def __init__(self, cfg: AlignParams) -> None:
        self.cfg = cfg
        self._detector: Detector | None = None
        self._readers: dict[Path, RecordReader] = {}

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            options: dict[str, object] = {}
            if self.cfg.detector in ("retinaface", "retinaface_mnet"):
                # retinaface_mnet: no weights file -> the pinned ONNX, fetched once and cached
                options = {"weights": self.cfg.retinaface_weights}
                options["max_size"] = self.cfg.retinaface_size
            self._detector = get_detector(self.cfg.detector, **options)
        return self._detector

    def _reader(self, rec: Path) -> RecordReader:
        if rec not in self._readers:
            self._readers[rec] = RecordReader(rec)
        return self._readers[rec]

    def _load(self, job: AlignJob, index: int, item: Item) -> _Decoded:
        """Decode one item; raises BadImage / DataFormatError naming it."""
        landmarks: np.ndarray | tuple[float, ...] | None
        if isinstance(item.ref, str):
            where = str(job.root / item.ref)
            data = (job.root / item.ref).read_bytes()
            landmarks = item.landmarks
            group = item.group
        else:
            where = f"{job.root}: record {item.ref}"
            payload = self._reader(job.root).read(item.ref)
            group, _number, data, landmarks = decode_frame(payload, where)
        points = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(5, 2)
        return _Decoded(index, where, group, decode_image(data, where=where), points)

    def _find_landmarks(self, decoded: list[_Decoded]) -> None:
        """Fill in detected landmarks (left None when no face scores ``min_score``)."""
        todo = [d for d in decoded if d.landmarks is None]
        if not todo:
            return
        for d, found in zip(todo, self.detector.detect([d.image for d in todo]), strict=True):
            h, w = d.image.shape[:2]
            best = pick_face(
                found.boxes,
                found.scores,
                w,
                h,
                min_score=self.cfg.min_score,
                centre_weight=self.cfg.centre_weight,
            )
            d.landmarks = None if best is None else found.landmarks[best]

    def _crop(self, d: _Decoded, complete: bool) -> Crop | Failure:
        centre_crop = d.landmarks is None
        if centre_crop and not complete:
            return Failure(d.index, "no_face", f"{d.where}: no face scored >= {self.cfg.min_score}")
        h, w = d.image.shape[:2]
        points = centre_crop_landmarks(w, h) if d.landmarks is None else d.landmarks
        crop = warp_face(d.image, points, self.cfg.image_size)
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            return Failure(d.index, "encode", f"{d.where}: JPEG encoding of the crop failed")
        return Crop(d.index, d.group, buf.tobytes(), centre_crop)

    def align(self, job: AlignJob, indices: Sequence[int]) -> Iterator[Crop | Failure]:
        """Outcomes for ``job.items[i]``, ``i`` in ``indices``, in that order."""
        batch = self.cfg.detect_batch
        for start in range(0, len(indices), batch):
            outcomes: dict[int, Crop | Failure] = {}
            decoded: list[_Decoded] = []
            for index in indices[start : start + batch]:
                try:
                    decoded.append(self._load(job, index, job.items[index]))
                except BadImage as exc:
                    outcomes[index] = Failure(index, exc.reason, str(exc))
            self._find_landmarks(decoded)
            outcomes.update((d.index, self._crop(d, job.complete)) for d in decoded)
            yield from (outcomes[index] for index in indices[start : start + batch])

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
