"""Align an image-folder dataset (``<root>/<identity>/<image>``) with a face detector.

Per image: decode robustly, detect, keep the best-placed confident face, warp it onto the
ArcFace template. Images without a usable face are skipped and counted by reason; the
result is an insightface ``train.rec`` with identities numbered in name order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from arcflow.align.detectors import Detector
from arcflow.align.imageio import BadImage, decode_image
from arcflow.align.release import AlignReport, contiguous_labels
from arcflow.align.select import pick_face
from arcflow.align.template import warp_face
from arcflow.data.imagefolder import scan_image_folder
from arcflow.data.recordio import write_face_dataset
from arcflow.errors import DataFormatError
from arcflow.progress import progress


def _batches(items: Sequence[tuple[str, int]], size: int) -> Iterator[Sequence[tuple[str, int]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def align_image_folder(
    root: Path,
    out_dir: Path,
    detector: Detector,
    *,
    size: int = 112,
    quality: int = 95,
    min_score: float = 0.9,
    centre_weight: float = 0.5,
    batch_size: int = 16,
    max_bad_fraction: float = 0.0,
) -> AlignReport:
    """Detect, select and align one face per image of ``root`` into ``out_dir/train.rec``."""
    index = scan_image_folder(root)
    report = AlignReport()
    items = list(zip(index.paths, index.labels, strict=True))

    def crops() -> Iterator[tuple[str, bytes]]:
        bar = progress(total=len(items), desc="align (detect)", unit="img")
        for batch in _batches(items, batch_size):
            decoded: list[tuple[str, int, np.ndarray]] = []
            for rel, label in batch:
                report.total += 1
                try:
                    decoded.append((rel, label, decode_image((root / rel).read_bytes(), where=rel)))
                except BadImage as exc:
                    report.fail(str(exc), exc.reason)
            detections = detector.detect([image for *_, image in decoded]) if decoded else []
            for (rel, label, image), det in zip(decoded, detections, strict=True):
                h, w = image.shape[:2]
                best = pick_face(
                    det.boxes, det.scores, w, h, min_score=min_score, centre_weight=centre_weight
                )
                if best is None:
                    report.fail(f"{rel}: no face scored >= {min_score}", "no_face")
                    continue
                crop = warp_face(image, det.landmarks[best], size)
                ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    report.fail(f"{rel}: JPEG encoding of the crop failed", "encode")
                    continue
                report.aligned += 1
                yield index.classes[label], buf.tobytes()
            bar.update(len(batch))
        bar.close()

    if not items:
        raise DataFormatError(f"{root}: no images in <identity>/<image> folders")
    try:
        write_face_dataset(out_dir, contiguous_labels(crops()), image_size=(size, size))
    except ValueError:
        if report.aligned:
            raise
        report.check(0.0, root)  # nothing aligned: report why
    report.check(max_bad_fraction, root)
    return report
