"""Pack an exported backbone into a face-model bundle folder (atomically)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcflow.atomic import atomic_dir
from arcflow.config import AlignParams, ServeParams
from arcflow.errors import ConfigError
from arcflow.serve.bundle import Bundle, Limits, read_bundle

BACKBONE = "backbone.onnx"
BACKBONE_FP16 = "backbone_fp16.onnx"
CARD = "model_card.md"


def detector_weights(serve: ServeParams, align: AlignParams) -> Path | None:
    """The weights file the service's detector needs (None: they ship in its package)."""
    if serve.detector == "retinaface_mnet":
        from arcflow.align.detectors.retinaface_mnet_weights import retinaface_mnet_weights

        return retinaface_mnet_weights()
    if serve.detector == "retinaface":
        if not align.retinaface_weights:
            raise ConfigError(
                "serve.detector retinaface needs align.retinaface_weights",
                hint="or use serve.detector: retinaface_mnet (offline)",
            )
        return Path(align.retinaface_weights)
    return None


def detector_options(serve: ServeParams, align: AlignParams) -> dict[str, Any]:
    """Constructor options recorded for the detector (CPU or CUDA decided where it runs)."""
    if serve.detector == "retinaface":
        return {"max_size": align.retinaface_size}
    return {}


def write_bundle(
    out: Path,
    *,
    backbone: Path,
    backbone_fp16: Path | None,
    embedding_size: int,
    serve: ServeParams,
    align: AlignParams,
    thresholds: Mapping[str, Any] | None,
    card: str,
) -> Bundle:
    """The bundle folder ``out``: backbones, detector weights, ``face_pipeline.json``, card."""
    weights = detector_weights(serve, align)
    with atomic_dir(out) as tmp:
        shutil.copyfile(backbone, tmp / BACKBONE)
        if backbone_fp16 is not None:
            shutil.copyfile(backbone_fp16, tmp / BACKBONE_FP16)
        if weights is not None:
            shutil.copyfile(weights, tmp / weights.name)
        bundle = Bundle(
            backbone=BACKBONE,
            backbone_fp16=BACKBONE_FP16 if backbone_fp16 is not None else None,
            embedding_size=embedding_size,
            detector=serve.detector,
            detector_weights=weights.name if weights is not None else None,
            detector_options=detector_options(serve, align),
            min_score=serve.min_score,
            centre_weight=serve.centre_weight,
            default_far=serve.default_far,
            thresholds=dict(thresholds) if thresholds else None,
            limits=Limits(serve.max_image_bytes, serve.max_pixels, serve.max_images),
        )
        bundle.write(tmp)
        (tmp / CARD).write_text(card, encoding="utf-8")
        read_bundle(tmp)  # what is written reads back
    return bundle
