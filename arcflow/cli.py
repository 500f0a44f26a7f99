"""The ``arcflow`` command: the face service (embed, verify, search), promotion and rollback in
the model registry, and utilities.

Pipeline work runs through ``dvc repro``; this CLI holds what DVC shouldn't do (it changes
shared state or only inspects).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from arcflow.config import load_params
from arcflow.failures import one_line_errors
from arcflow.preset_cli import app as preset_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(preset_app, name="preset", help="Presets (configs/) as DVC experiments.")

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
    """Validate every section of a params file (params.yaml, or one a preset was applied to;
    `arcflow preset show NAME --merged` checks a preset itself)."""
    with one_line_errors():
        load_params(path)
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

    from arcflow.data.synthface import SynthFaceSpec, iter_images
    from arcflow.data.synthface_sheet import contact_sheet
    from arcflow.face_template import warp_face

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


REJECTED_EXIT = 3  # `arcflow promote`: the candidate failed a gate (nothing is wrong)


def _registry_client(params_file: Path, *sections: str):
    """(validated params, an MlflowClient on the pipeline's tracking store)."""
    from arcflow.tracking.run import client

    loaded = load_params(params_file, (*sections, "registry", "tracking"))
    return loaded, client(loaded.tracking, Path.cwd())


ParamsOption = Annotated[Path, typer.Option("--params", help="params file")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="show the decision, change nothing")]


@app.command()
def promote(
    model_info: Annotated[
        Path, typer.Option(help="the export stage's record of the logged model")
    ] = Path("models/onnx_model.json"),
    model_id: Annotated[str | None, typer.Option(help="a logged model id instead")] = None,
    report: Annotated[Path | None, typer.Option(help="also write the report here")] = Path(
        "reports/promotion.md"
    ),
    params_file: ParamsOption = Path("params.yaml"),
    dry_run: DryRun = False,
) -> None:
    """Register the exported model, alias it challenger, promote it to champion if it passes.

    Exit 0: promoted (or would be, with --dry-run); 3: not promoted; 1: error.
    """
    from arcflow.atomic import atomic_file
    from arcflow.export.mlflow_model import read_model_id
    from arcflow.registry import promote as promote_model

    with one_line_errors():
        loaded, client = _registry_client(params_file, "export")
        candidate = model_id or read_model_id(model_info)
        outcome = promote_model(client, loaded.registry, loaded.export, candidate, dry_run=dry_run)
    typer.echo(outcome.report)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(report) as tmp:
            tmp.write_text(outcome.report, encoding="utf-8")
    if not outcome.promoted:
        raise typer.Exit(REJECTED_EXIT)


@app.command()
def rollback(params_file: ParamsOption = Path("params.yaml"), dry_run: DryRun = False) -> None:
    """Give the champion alias back to the previous champion."""
    from arcflow.registry import rollback as rollback_model

    with one_line_errors():
        loaded, client = _registry_client(params_file)
        done = rollback_model(client, loaded.registry, dry_run=dry_run)
    would = "would roll back" if done.dry_run else "rolled back"
    previous = done.previous_after or "none"
    typer.echo(
        f"{loaded.registry.model_name}: {would} champion {done.from_version} -> "
        f"{done.to_version}; previous-champion: {previous}"
    )


@app.command()
def champion(
    params_file: ParamsOption = Path("params.yaml"),
    events: Annotated[int, typer.Option(help="audit events to show")] = 10,
) -> None:
    """The registry's aliases and its latest audit events."""
    from arcflow.registry import audit_log
    from arcflow.registry.store import aliases

    with one_line_errors():
        loaded, client = _registry_client(params_file)
        name = loaded.registry.model_name
        current = aliases(client, name)
        log = audit_log(client, name)[-events:]
    if not current:
        typer.echo(f"{name}: no aliases yet (arcflow promote registers the first champion)")
    for alias, version in sorted(current.items()):
        typer.echo(f"{alias:<18} {name} version {version}")
    for event in log:
        typer.echo(f"{event['at']}  {event['event']:<9} v{event['version']}  {event['summary']}")


def _face_command(name: str):
    """A face-service command (arcflow.serve.cli) with the CLI's clean errors."""
    import functools

    from arcflow.serve import cli as face

    command = getattr(face, name)

    @functools.wraps(command)
    def wrapped(*args, **kwargs):
        with one_line_errors():
            return command(*args, **kwargs)

    return wrapped


for _name in ("embed", "verify", "search"):
    app.command(_name)(_face_command(_name))


@app.command("import-model")
def import_model(
    uri: Annotated[str, typer.Argument(help="https://, s3://bucket/key or a path")],
    out: Annotated[Path, typer.Option("--out", "-o", help="model folder to write")],
    arch: Annotated[
        str | None, typer.Option(help="backbone name (default: inferred from the weights)")
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="expected SHA-256 of the file")] = None,
    license: Annotated[
        str | None, typer.Option("--license", help="the model's licence, recorded")
    ] = None,
    colour: Annotated[
        str | None,
        typer.Option("--colour", help="ONNX: the channel order it was trained on, rgb or bgr"),
    ] = None,
) -> None:
    """Import a PyTorch checkpoint (insightface's layout) or an ONNX recognition model as a
    model folder."""
    from arcflow.imports.model_import import import_model

    with one_line_errors():
        record = import_model(uri, out, arch=arch, sha256=sha256, license=license, colour=colour)
    if record.format == "onnx":
        from arcflow.imports.onnx_model import describe

        detail = f"ONNX, {describe(record.conventions or {})}, {record.stored_dtype} weights"
    else:
        kwargs = ", ".join(f"{k}={v:g}" for k, v in record.kwargs.items())
        detail = f"{record.architecture} ({kwargs}) from pytorch {record.stored_dtype} weights"
    typer.echo(f"{out / record.file}: {detail}, sha256 {record.sha256[:16]}…")


@app.command()
def summary(params_file: ParamsOption = Path("params.yaml")) -> None:
    """What the last pipeline run produced: headline benchmark numbers, training and export,
    the logged model's MLflow URI and the reports (the end of `make run`)."""
    from arcflow.run_summary import read_outputs, summarize
    from arcflow.tracking.run import tracking_uri

    with one_line_errors():
        outputs = read_outputs(Path.cwd())
        uri = tracking_uri(load_params(params_file, ("tracking",)).tracking, Path.cwd())
    typer.echo(summarize(outputs, tracking_uri=uri), nl=False)


@app.command()
def doctor(params_file: ParamsOption = Path("params.yaml")) -> None:
    """Check the services this checkout is configured to use; name the setting to fix.

    MLflow (MLFLOW_TRACKING_URI), Prefect (PREFECT_API_URL), the default DVC remote as DVC
    reads it (.dvc/config and .dvc/config.local: endpoint, region, profile, keys) and s3://
    data sources (endpoint, credentials, bucket). Exit 1 if any check fails.
    """
    from arcflow.services import configured_checks
    from arcflow.tracking.run import tracking_uri

    with one_line_errors():
        loaded = load_params(params_file, ("data", "tracking"))
    checks = configured_checks(
        loaded.data,
        tracking_uri(loaded.tracking, Path.cwd()),
        os.environ.get("PREFECT_API_URL"),
        Path.cwd(),
    )
    for check in checks:
        typer.echo(check.line(), err=not check.ok)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
