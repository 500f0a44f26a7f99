"""The ``arcflow`` command: inspect an installation and validate params files.

Pipeline work runs through ``dvc repro``; this CLI holds what DVC shouldn't do.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from arcflow.config import load_params
from arcflow.errors import ArcFlowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

PACKAGES = ("torch", "torchvision", "dvc", "mlflow", "prefect", "onnxruntime", "albumentations")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@app.command()
def info() -> None:
    """Versions of the stack, the compute device and where MLflow logs."""
    import torch

    for package in ("arcflow", *PACKAGES):
        typer.echo(f"{package:<15} {_version(package)}")
    cuda = torch.cuda.is_available()
    devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    typer.echo(f"{'device':<15} {'cuda: ' + devices if cuda else 'cpu'}")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "params.yaml tracking.default_uri")
    typer.echo(f"{'mlflow uri':<15} {uri}")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml"),
) -> None:
    """Validate every section of a params file (params.yaml or a preset in configs/)."""
    try:
        load_params(path)
    except ArcFlowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{path}: valid")


@app.command("synthface-sheet")
def synthface_sheet(
    out: Annotated[Path, typer.Argument(help="image file to write (.png or .jpg)")],
    identities: Annotated[int, typer.Option(help="rows: one identity each")] = 4,
    images: Annotated[int, typer.Option(help="columns: images per identity")] = 8,
    seed: int = 0,
    difficulty: float = 0.5,
) -> None:
    """Preview SynthFace: per identity, a row of unaligned frames and a row of aligned crops."""
    import cv2

    from arcflow.align.template import warp_face
    from arcflow.data.synthface import SynthFaceSpec, contact_sheet, iter_images

    spec = SynthFaceSpec(identities, images, seed=seed, difficulty=difficulty)
    tiles: list = []
    for k in range(identities):
        frames = list(iter_images(spec, [k]))
        tiles += [
            cv2.resize(img, (112, 112), interpolation=cv2.INTER_AREA) for *_, img, _ in frames
        ]
        tiles += [warp_face(img, lm, 112) for *_, img, lm in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), contact_sheet(tiles, cols=images)):
        typer.echo(f"error: could not write {out}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{out}: {identities} identities x {images} images (top: frames, bottom: aligned)")


if __name__ == "__main__":
    app()
