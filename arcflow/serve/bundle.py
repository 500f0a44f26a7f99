"""What a face model carries besides its weights: ``face_pipeline.json``, read back strictly.

The bundle is a folder: the ONNX backbone (and its float16 variant), the detector's weights
file when it has one, and ``face_pipeline.json`` naming them with everything needed to go
from a photo to a decision: detector and its options, the alignment template, the input
contract, the flip rule, the calibrated thresholds and the input limits. It is read in the
serving process, so it is checked by hand (no pydantic) and every file name must stay inside
the folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arcflow.errors import DataFormatError
from arcflow.face_template import ARCFACE_TEMPLATE

CONFIG_NAME = "face_pipeline.json"
FORMAT_VERSION = 1
DETECTORS = ("retinaface_mnet", "mtcnn", "retinaface")
FLIP_RULE = "l2(f(x) + f(flip(x))): the pair-set rule of evaluate"
INPUT_CONTRACT = "RGB 112x112, (x / 255 - 0.5) / 0.5, NCHW float32, 5-point similarity-aligned"


@dataclass(frozen=True)
class Limits:
    """What one request may cost: bytes and pixels per image, images per call."""

    max_image_bytes: int = 20 << 20
    max_pixels: int = 40_000_000
    max_images: int = 256


@dataclass(frozen=True)
class Bundle:
    """The contents of ``face_pipeline.json`` (file names relative to the bundle folder)."""

    backbone: str
    embedding_size: int
    detector: str
    backbone_fp16: str | None = None
    detector_weights: str | None = None
    detector_options: dict[str, Any] = field(default_factory=dict)
    min_score: float = 0.9
    centre_weight: float = 0.5
    default_far: float = 1e-4
    thresholds: dict[str, Any] | None = None
    limits: Limits = Limits()
    template: tuple[tuple[float, float], ...] = tuple(map(tuple, ARCFACE_TEMPLATE.tolist()))
    crop_size: int = 112
    flip: str = FLIP_RULE
    input: str = INPUT_CONTRACT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        path = folder / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path


def _fail(where: str, key: str, problem: str) -> DataFormatError:
    return DataFormatError(f"{where}: {key}: {problem}", hint="re-export the model (dvc repro)")


def _number(raw: dict, key: str, where: str, lo: float, hi: float, default: Any) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, key, f"expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(where, key, f"{value} is outside [{lo}, {hi}]")
    return value


def _file(raw: dict, key: str, folder: Path, where: str, *, required: bool) -> str | None:
    name = raw.get(key)
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise _fail(where, key, f"expected a file name inside the bundle, got {name!r}")
    if not (folder / name).is_file():
        raise _fail(where, key, f"{name} is not in {folder}")
    return name


def read_bundle(folder: str | Path) -> Bundle:
    """The bundle in ``folder``, every field checked; DataFormatError names the bad one."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    where = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"{folder}: no {CONFIG_NAME}: not a face model bundle") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{where}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _fail(where, "(top level)", "expected an object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise _fail(where, "format_version", f"{raw.get('format_version')!r} != {FORMAT_VERSION}")
    detector = raw.get("detector")
    if detector not in DETECTORS:
        raise _fail(where, "detector", f"{detector!r} is not one of {', '.join(DETECTORS)}")
    options = raw.get("detector_options", {})
    if not isinstance(options, dict):
        raise _fail(where, "detector_options", "expected an object")
    thresholds = raw.get("thresholds")
    if thresholds is not None and not isinstance(thresholds, dict):
        raise _fail(where, "thresholds", "expected an object or null")
    limits_raw = raw.get("limits", {})
    if not isinstance(limits_raw, dict):
        raise _fail(where, "limits", "expected an object")
    limits = Limits(
        max_image_bytes=int(_number(limits_raw, "max_image_bytes", where, 1, 1 << 31, 20 << 20)),
        max_pixels=int(_number(limits_raw, "max_pixels", where, 1, 1 << 31, 40_000_000)),
        max_images=int(_number(limits_raw, "max_images", where, 1, 1 << 16, 256)),
    )
    template = raw.get("template", Bundle.template)
    try:
        points = tuple((float(x), float(y)) for x, y in template)
    except (TypeError, ValueError):
        raise _fail(where, "template", "expected 5 (x, y) points") from None
    if len(points) != 5 or not all(math.isfinite(v) for p in points for v in p):
        raise _fail(where, "template", "expected 5 finite (x, y) points")
    return Bundle(
        backbone=str(_file(raw, "backbone", folder, where, required=True)),
        backbone_fp16=_file(raw, "backbone_fp16", folder, where, required=False),
        embedding_size=int(_number(raw, "embedding_size", where, 1, 1 << 16, None)),
        detector=detector,
        detector_weights=_file(raw, "detector_weights", folder, where, required=False),
        detector_options=options,
        min_score=float(_number(raw, "min_score", where, 0.0, 1.0, 0.9)),
        centre_weight=float(_number(raw, "centre_weight", where, 0.0, 1.0, 0.5)),
        default_far=float(_number(raw, "default_far", where, 1e-12, 1.0, 1e-4)),
        thresholds=thresholds,
        limits=limits,
        template=points,
        crop_size=int(_number(raw, "crop_size", where, 112, 112, 112)),
        flip=str(raw.get("flip", FLIP_RULE)),
        input=str(raw.get("input", INPUT_CONTRACT)),
    )
