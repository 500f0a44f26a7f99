"""``arcflow embed``, ``arcflow verify``, ``arcflow search``: the face service from a shell.

Each takes ``--model``: ``models:/<name>@champion`` (the default), a ``runs:/`` URI, or a
folder (``models/face_model``, a downloaded MLflow model). The tracking server is
``MLFLOW_TRACKING_URI``, else params.yaml's local default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from arcflow.progress import progress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="models:/ or runs:/ URI, or a face model folder")
]
DEFAULT_MODEL = "models:/arcface@champion"
FarOption = Annotated[
    float | None, typer.Option(help="false accept rate of the decision (default: the model's)")
]
AlignedOption = Annotated[bool, typer.Option(help="inputs are 112x112 aligned crops")]


def _use_tracking(params_file: Path = Path("params.yaml")) -> None:
    """Point MLflow at the pipeline's store unless MLFLOW_TRACKING_URI already does."""
    if os.environ.get("MLFLOW_TRACKING_URI") or not params_file.is_file():
        return
    import mlflow

    from arcflow.config import load_params
    from arcflow.tracking.run import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(load_params(params_file, ("tracking",)).tracking, Path()))


def _load(model: str):
    from arcflow.serve.loading import load_pipeline

    _use_tracking()
    return load_pipeline(model)


def image_files(inputs: list[Path]) -> list[tuple[Path, str]]:
    """Every image file under ``inputs`` with its identity: the sub-folder name of a folder
    input (``<folder>/<identity>/<image>``), else ""."""
    from arcflow.errors import ConfigError

    found: list[tuple[Path, str]] = []
    for item in inputs:
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    rel = path.relative_to(item)
                    found.append((path, rel.parts[0] if len(rel.parts) > 1 else ""))
        elif item.is_file():
            found.append((item, ""))
        else:
            raise ConfigError(f"{item}: no such file or folder", hint="check the path")
    if not found:
        raise ConfigError(
            f"no image files in {', '.join(map(str, inputs))}",
            hint=f"suffixes: {sorted(IMAGE_SUFFIXES)}",
        )
    return found


@dataclass(frozen=True)
class EmbeddedFaces:
    """Every face found in a list of files, row by row."""

    embeddings: np.ndarray  # (N, D) float32 unit rows
    image: list[str]
    face: list[int]
    identity: list[str]  # "" for an image outside an <identity>/ folder
    box: np.ndarray  # (N, 4)
    score: np.ndarray  # (N,)


def embed_files(
    pipeline, files: list[tuple[Path, str]], *, aligned: bool, desc: str
) -> tuple[EmbeddedFaces | None, list[tuple[str, str]]]:
    """The faces of ``files`` (None when there are none) and ``(path, message)`` failures."""
    rows: list = []
    failures: list[tuple[str, str]] = []
    step = max(1, min(32, pipeline.bundle.limits.max_images))
    bar = progress(total=len(files), desc=desc, unit="img")
    for start in range(0, len(files), step):
        part = files[start : start + step]
        result = pipeline.analyze([p for p, _ in part], aligned=aligned)
        for face in result.faces:
            path, identity = part[face.image]
            rows.append((face.embedding, str(path), face.face, identity, face.box, face.score))
        failures += [(str(part[e.image][0]), e.message) for e in result.errors]
        bar.update(len(part))
    bar.close()
    if not rows:
        return None, failures
    emb, names, faces, identities, boxes, scores = zip(*rows, strict=True)
    found = EmbeddedFaces(
        np.stack(emb),
        list(names),
        list(faces),
        list(identities),
        np.stack(boxes),
        np.array(scores, np.float32),
    )
    return found, failures


def _report_failures(failures: list[tuple[str, str]]) -> None:
    for path, message in failures:
        typer.echo(f"failed: {path}: {message}", err=True)


def embed(
    inputs: Annotated[list[Path], typer.Argument(help="images or folders (<identity>/<image>)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="embeddings folder to write")],
    model: ModelOption = DEFAULT_MODEL,
    aligned: AlignedOption = False,
) -> None:
    """Embed every face of the images: an embeddings folder with image, face and identity."""
    from arcflow.serve.embeddings_file import write_embeddings

    pipeline = _load(model)
    files = image_files(inputs)
    found, failures = embed_files(pipeline, files, aligned=aligned, desc="embed")
    _report_failures(failures)
    if found is None:
        typer.echo("error: no face found in any image", err=True)
        raise typer.Exit(1)
    write_embeddings(
        out,
        found.embeddings,
        image=found.image,
        face=found.face,
        identity=found.identity,
        box=found.box,
        score=found.score,
        model=model,
    )
    typer.echo(
        f"{out}: {len(found.image)} faces from {len(files) - len(failures)} of {len(files)} images "
        f"({len(failures)} failed)"
    )


def verify(
    a: Annotated[Path, typer.Argument(help="first photo")],
    b: Annotated[Path, typer.Argument(help="second photo")],
    model: ModelOption = DEFAULT_MODEL,
    far: FarOption = None,
    aligned: AlignedOption = False,
) -> None:
    """Are the two photos the same person? Score, threshold, FAR and the decision.

    Exit 0 with the answer; 1 when a photo has no usable face or the model cannot decide.
    """
    pipeline = _load(model)
    for path in (a, b):
        if not path.is_file():
            from arcflow.errors import ConfigError

            raise ConfigError(f"{path}: no such file", hint="check the path")
    decision = pipeline.verify(a, b, far=far, aligned=aligned)
    if decision.error:
        typer.echo(f"error: {decision.error}", err=True)
        raise typer.Exit(1)
    answer = "yes" if decision.same_person else "no"
    calibration = pipeline.thresholds
    typer.echo(f"same person: {answer}")
    typer.echo(f"score:       {decision.score:.4f} (cosine; same when > threshold)")
    typer.echo(f"threshold:   {decision.threshold:.4f} at FAR {decision.far_calibrated:g}")
    typer.echo(
        f"calibration: measured FAR {decision.far_measured:.3g} on {calibration.set_name} "
        f"({calibration.n_impostor:,} impostor {calibration.level} pairs)"
    )


def search(
    probe: Annotated[Path, typer.Argument(help="photo of the person to look for")],
    gallery: Annotated[
        Path, typer.Option(help="gallery: a folder <identity>/<image> or an embeddings folder")
    ],
    model: ModelOption = DEFAULT_MODEL,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="identities to list")] = 5,
    far: FarOption = None,
    aligned: AlignedOption = False,
) -> None:
    """Who in the gallery is this? The top-k identities by their best face's score."""
    from arcflow.serve.embeddings_file import META, read_embeddings
    from arcflow.serve.search import search as search_gallery
    from arcflow.serve.search import search_labels

    pipeline = _load(model)
    if not probe.is_file():
        from arcflow.errors import ConfigError

        raise ConfigError(f"{probe}: no such file", hint="check the path")
    if (gallery / META).is_file():
        stored = read_embeddings(gallery)
        matrix, images = stored.embeddings, stored.image
        index, names = stored.identity_index, stored.identity_names
    else:
        found, failures = embed_files(
            pipeline, image_files([gallery]), aligned=aligned, desc="gallery"
        )
        _report_failures(failures)
        if found is None:
            typer.echo(f"error: no face in the gallery {gallery}", err=True)
            raise typer.Exit(1)
        matrix, images = found.embeddings, np.array(found.image)
        names, index = np.unique(np.array(found.identity), return_inverse=True)
    labels, named = search_labels(index, names)
    result = pipeline.analyze([probe], aligned=aligned)
    face = pipeline.subject(result, 0)
    if face is None:
        typer.echo(f"error: {result.errors[0].message}", err=True)
        raise typer.Exit(1)
    if matrix.shape[1] != face.embedding.shape[0]:
        typer.echo(
            f"error: the gallery's embeddings are {matrix.shape[1]}-d, this model's "
            f"{face.embedding.shape[0]}-d (embed the gallery with the same model)",
            err=True,
        )
        raise typer.Exit(1)
    found_k = search_gallery(face.embedding[None, :], matrix, top_k, labels=labels)
    threshold = _threshold(pipeline, far)
    typer.echo(f"{'rank':<5} {'identity':<30} {'score':>7}  same person  best face")
    for rank, (label, row, score) in enumerate(
        zip(found_k.identities[0], found_k.indices[0], found_k.scores[0], strict=True), start=1
    ):
        identity = str(names[label]) if label < named else "(no identity)"
        same = "" if threshold is None else ("yes" if score > threshold else "no")
        typer.echo(f"{rank:<5} {identity:<30} {score:>7.4f}  {same:<11}  {images[row]}")


def _threshold(pipeline, far: float | None) -> float | None:
    """The decision threshold at ``far``; None when the model has no calibration, or when
    no FAR was asked for and the model's default one is not resolved (scores only)."""
    from arcflow.errors import ConfigError
    from arcflow.serve.decision import operating_point

    if pipeline.thresholds is None:
        return None
    try:
        return operating_point(pipeline.thresholds, far or pipeline.bundle.default_far)[1].threshold
    except ConfigError:
        if far is not None:
            raise
        return None
