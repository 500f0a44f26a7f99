"""Photo in → faces, unit embeddings and match decisions out: detect → align → embed → decide.

:class:`FacePipeline` is the in-process face service. Images are processed a few at a time
(memory stays flat whatever the batch), and one bad image never fails the call: it gets an
:class:`~arcflow.serve.inputs.ItemError` (undecodable, too large, no face, ...) and the other
images their faces. Embeddings follow evaluate's pair-set rule exactly (flip test, L2
normalisation), so an aligned crop embeds here as it does in evaluate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from arcflow.align.detectors import Detection, Detector, get_detector
from arcflow.align.select import pick_face
from arcflow.embedding import OnnxEncoder, flip_embed, normalise_crops
from arcflow.errors import ConfigError
from arcflow.evaluate.thresholds import Thresholds
from arcflow.face_template import estimate_similarity
from arcflow.imageio import BadImage, decode_image
from arcflow.serve.bundle import CONFIG_NAME, Bundle, read_bundle
from arcflow.serve.decision import Decision, decide
from arcflow.serve.inputs import ItemError, item_bytes

CHUNK = 8  # images decoded, detected and embedded together


@dataclass(frozen=True, eq=False)
class Face:
    """One face: its image, rank in that image, box, detector score, 5 points, unit embedding."""

    image: int
    face: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray

    def to_record(self) -> dict:
        return {
            "image": self.image,
            "face": self.face,
            "box": [round(float(v), 2) for v in self.box],
            "score": float(self.score),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "embedding": [float(v) for v in self.embedding],
            "error": None,
            "reason": None,
        }


@dataclass
class Timings:
    """Seconds spent in each step, summed over calls (the benchmark's split)."""

    decode: float = 0.0
    detect: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    faces: int = 0
    images: int = 0

    def add(self, step: str, start: float) -> float:
        now = time.perf_counter()
        setattr(self, step, getattr(self, step) + now - start)
        return now


@dataclass(frozen=True)
class Result:
    """Every face found, and an error per image that gave none."""

    faces: list[Face] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # image -> (width, height)

    def records(self) -> list[dict]:
        """Faces and errors as plain records, in image order (the REST response rows)."""
        rows = [f.to_record() for f in self.faces] + [
            {"image": e.image, "face": -1, "error": e.message, "reason": e.reason}
            for e in self.errors
        ]
        return sorted(rows, key=lambda r: (r["image"], r["face"]))


class FacePipeline:
    """The face service in-process, built from a bundle folder (:func:`load` does that)."""

    def __init__(self, bundle: Bundle, folder: Path, *, precision: str = "fp32") -> None:
        if precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and bundle.backbone_fp16 is None:
            raise ConfigError("this model has no float16 variant", hint="use precision fp32")
        self.bundle = bundle
        self.folder = folder
        self.precision = precision
        name = bundle.backbone_fp16 if precision == "fp16" else bundle.backbone
        self.encoder = OnnxEncoder(folder / str(name))
        self.thresholds = (
            None
            if bundle.thresholds is None
            else Thresholds.from_dict(bundle.thresholds, f"{folder / CONFIG_NAME}: thresholds")
        )
        self.template = np.asarray(bundle.template, dtype=np.float64)
        self._detector: Detector | None = None

    @property
    def detector(self) -> Detector:
        """Built on first use: embedding aligned crops never loads it."""
        if self._detector is None:
            options = dict(self.bundle.detector_options)
            if self.bundle.detector_weights is not None:
                options["weights"] = self.folder / self.bundle.detector_weights
            self._detector = get_detector(self.bundle.detector, **options)
        return self._detector

    # ---------------------------------------------------------------- faces

    def analyze(
        self,
        items: Sequence[object],
        *,
        aligned: bool = False,
        max_faces: int = 0,
        min_score: float | None = None,
        allow_paths: bool = True,
        root: Path | None = None,
        timings: Timings | None = None,
    ) -> Result:
        """Faces and embeddings of every item (bytes, base64 text or a Path).

        ``aligned``: the items are 112x112 aligned crops (no detection; one face each).
        ``max_faces``: keep at most this many faces per image, most confident first (0: all).
        ``min_score``: detector confidence needed (default: the bundle's).
        """
        limits = self.bundle.limits
        if len(items) > limits.max_images:
            raise ConfigError(
                f"{len(items)} images in one call; at most {limits.max_images}",
                hint="send them in several calls",
            )
        if max_faces < 0:
            raise ConfigError(f"max_faces must be >= 0, got {max_faces}")
        threshold = self.bundle.min_score if min_score is None else float(min_score)
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"min_score must be in [0, 1], got {min_score}")
        timings = timings if timings is not None else Timings()
        result = Result()
        for start in range(0, len(items), CHUNK):
            chunk = range(start, min(len(items), start + CHUNK))
            images = self._decode(items, chunk, aligned, allow_paths, root, result, timings)
            if aligned:
                self._embed_aligned(images, result, timings)
            else:
                self._detect_and_embed(images, max_faces, threshold, result, timings)
        return result

    def _decode(
        self,
        items: Sequence[object],
        chunk: range,
        aligned: bool,
        allow_paths: bool,
        root: Path | None,
        result: Result,
        timings: Timings,
    ) -> dict[int, np.ndarray]:
        limits, size = self.bundle.limits, self.bundle.crop_size
        images: dict[int, np.ndarray] = {}
        start = time.perf_counter()
        for index in chunk:
            data = item_bytes(
                items[index],
                index,
                max_bytes=limits.max_image_bytes,
                allow_paths=allow_paths,
                root=root,
            )
            if isinstance(data, ItemError):
                result.errors.append(data)
                continue
            try:
                image = decode_image(data, where=f"image {index}", max_pixels=limits.max_pixels)
            except BadImage as exc:
                result.errors.append(ItemError(index, exc.reason, str(exc)))
                continue
            if aligned and image.shape[:2] != (size, size):
                got = f"{image.shape[1]}x{image.shape[0]}"
                message = f"image {index}: an aligned crop is {size}x{size}, got {got}"
                result.errors.append(ItemError(index, "not_aligned", message))
                continue
            images[index] = image
            result.sizes[index] = (image.shape[1], image.shape[0])
        timings.images += len(chunk)
        timings.add("decode", start)
        return images

    def _embed_aligned(
        self, images: dict[int, np.ndarray], result: Result, timings: Timings
    ) -> None:
        if not images:
            return
        size = float(self.bundle.crop_size)
        box = np.array([0.0, 0.0, size, size])
        start = time.perf_counter()
        embeddings = self.embed_crops([images[i] for i in images])
        timings.add("embed", start)
        for index, embedding in zip(images, embeddings, strict=True):
            result.faces.append(Face(index, 0, box, 1.0, self.template.copy(), embedding))
        timings.faces += len(images)

    def _detect_and_embed(
        self,
        images: dict[int, np.ndarray],
        max_faces: int,
        min_score: float,
        result: Result,
        timings: Timings,
    ) -> None:
        if not images:
            return
        start = time.perf_counter()
        detections = self.detector.detect(list(images.values()))
        start = timings.add("detect", start)
        found: list[tuple[int, int, Detection]] = []
        crops: list[np.ndarray] = []
        for index, detection in zip(images, detections, strict=True):
            keep = np.flatnonzero(detection.scores >= min_score)[: max_faces or None]
            if not len(keep):
                message = f"image {index}: no face with score >= {min_score:g}"
                result.errors.append(ItemError(index, "no_face", message))
            for row in keep:
                found.append((index, int(row), detection))
                crops.append(self.warp(images[index], detection.landmarks[row]))
        start = timings.add("align", start)
        if not crops:
            return
        embeddings = self.embed_crops(crops)
        timings.add("embed", start)
        for (index, row, det), embedding in zip(found, embeddings, strict=True):
            face = Face(
                index, row, det.boxes[row], float(det.scores[row]), det.landmarks[row], embedding
            )
            result.faces.append(face)
        timings.faces += len(crops)

    def warp(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The aligned crop: a similarity taking ``landmarks`` onto the bundle's template."""
        matrix = estimate_similarity(np.asarray(landmarks, np.float64), self.template)
        size = self.bundle.crop_size
        return cv2.warpAffine(image, matrix, (size, size), borderValue=0)

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Unit embeddings (flip test) of BGR ``uint8`` crops of the bundle's crop size."""
        rgb = np.stack([crop[:, :, ::-1] for crop in crops])
        out = [flip_embed(self.encoder, normalise_crops(part)) for part in _batches(rgb, 32)]
        return np.concatenate(out)

    # ------------------------------------------------------------- decisions

    def subject(self, result: Result, image: int) -> Face | None:
        """The face a decision is about: the most confident, central one (align's rule)."""
        faces = [f for f in result.faces if f.image == image]
        if not faces:
            return None
        boxes = np.stack([f.box for f in faces])
        scores = np.array([f.score for f in faces])
        width, height = result.sizes[image]
        weight = self.bundle.centre_weight
        pick = pick_face(boxes, scores, width, height, min_score=0.0, centre_weight=weight)
        return faces[pick if pick is not None else 0]

    def verify(
        self, a: object, b: object, *, far: float | None = None, aligned: bool = False
    ) -> Decision:
        """Are ``a`` and ``b`` the same person? The score, the threshold at ``far``, the answer."""
        result = self.analyze([a, b], aligned=aligned)
        return self.decide_pair(result, 0, 1, far)

    def decide_pair(self, result: Result, i: int, j: int, far: float | None) -> Decision:
        """The decision on images ``i`` and ``j`` of ``result`` (failed if either has no face)."""
        far = self.bundle.default_far if far is None else far
        errors = {e.image: e for e in result.errors}
        faces = [self.subject(result, k) for k in (i, j)]
        for k, face in zip((i, j), faces, strict=True):
            if face is None:
                error = errors.get(k)
                return Decision.failed(far, error.message if error else f"image {k}: no face")
        score = float(np.dot(faces[0].embedding, faces[1].embedding))  # type: ignore[union-attr]
        return decide(score, self.thresholds, far)


def _batches(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(array), size):
        yield array[start : start + size]


def load_bundle(folder: str | Path, *, precision: str = "fp32") -> FacePipeline:
    """The face pipeline of a bundle folder (``face_pipeline.json`` + its files)."""
    folder = Path(folder)
    return FacePipeline(read_bundle(folder), folder, precision=precision)
