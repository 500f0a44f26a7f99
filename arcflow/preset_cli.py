"""``arcflow preset …``: run a preset (a diff over params.yaml in configs/) as a DVC experiment,
show it, or write it into params.yaml.

``run`` hands DVC the diff as ``dvc exp run -S key=value`` arguments, so DVC writes the
experiment's params.yaml itself and ``dvc exp show`` lists the preset's values. Everything is
validated first, as DVC will apply it, so a bad preset never reaches the queue.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from arcflow.atomic import atomic_file
from arcflow.errors import ConfigError
from arcflow.failures import one_line_errors
from arcflow.presets import (
    CONFIGS_DIR,
    Merged,
    Preset,
    applied_text,
    dump,
    fix_hint,
    list_presets,
    load_preset,
    merge_preset,
    select_variants,
    validate_text,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

PARAMS = Path("params.yaml")  # DVC's default params file: the one `dvc exp run -S` edits

NameArg = Annotated[str, typer.Argument(help="preset name (configs/<name>.yaml) or a YAML path")]
ConfigsOption = Annotated[Path, typer.Option("--configs", help="folder of the presets")]
ParamsOption = Annotated[Path, typer.Option("--params", help="the default params file")]
VariantOption = Annotated[
    str | None, typer.Option("--variant", help="one of the preset's variants, on top of it")
]


def _dvc() -> str:
    """The dvc next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def _as_dvc_applies(params: Path, overrides: list[str]) -> str:
    """params.yaml after DVC applies ``overrides`` (its own code, on a copy)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="arcflow-preset-") as tmp:
        copy = Path(tmp) / "params.yaml"
        copy.write_text(params.read_text(encoding="utf-8"), encoding="utf-8")
        try:
            apply_overrides(copy, overrides)
        except InvalidArgumentError as exc:
            cause = str(exc.__cause__ or exc).strip().splitlines()
            raise ConfigError(
                f"dvc exp run -S refuses the settings: {cause[0] if cause else exc}",
                hint="-S takes key=value for keys params.yaml has (+key=value adds one)",
            ) from None
        return copy.read_text(encoding="utf-8")


def _prepare(
    preset: Preset, params: Path, variant: str | None, extra: list[str]
) -> tuple[Merged, list[str]]:
    """Merge and validate the preset (+ variant + extra ``-S``), as DVC will write it."""
    merged = merge_preset(preset, params, variant)
    expected = validate_text(dump(merged.document), merged.label, fix_hint(preset))
    for item in extra:
        if ":" in item.partition("=")[0]:
            raise ConfigError(f"-S {item}: presets set params.yaml only (no file: prefix)")
    overrides = [*merged.overrides, *extra]
    label = merged.label + (f" with -S {' -S '.join(extra)}" if extra else "")
    hint = fix_hint(preset) + (" (or the -S values)" if extra else "")
    checked = validate_text(_as_dvc_applies(params, overrides), label, hint)
    if not extra and checked != expected:  # DVC must write the merge that show/apply give
        raise RuntimeError(f"{merged.label}: dvc -S gives other params than the merge")
    return merged, overrides


def _command(overrides: list[str], *, queue: bool, name: str | None) -> list[str]:
    args = ["exp", "run"]
    if queue:
        args.append("--queue")
    if name:
        args += ["--name", name]
    for item in overrides:
        args += ["-S", item]
    return args


def _summary(header: str) -> str:
    """The first sentence of a preset's recipe comment."""
    text = " ".join(line.lstrip("#").strip() for line in header.splitlines())
    text = text.removeprefix("ArcFlow preset:").strip()
    return text.split(". ")[0].rstrip(".")


@app.command("list")
def list_command(configs: ConfigsOption = CONFIGS_DIR) -> None:
    """The presets in configs/, with the first sentence of each one's recipe."""
    with one_line_errors():
        for name in list_presets(configs):
            preset = load_preset(name, configs)
            typer.echo(f"{name:<24} {_summary(preset.header)}")
            if preset.variants:
                typer.echo(f"{'':<24} variants: {', '.join(preset.variants)}")


@app.command()
def show(
    name: NameArg,
    variant: VariantOption = None,
    merged: Annotated[
        bool, typer.Option("--merged", help="print the whole merged params.yaml instead")
    ] = False,
    params: ParamsOption = PARAMS,
    configs: ConfigsOption = CONFIGS_DIR,
) -> None:
    """Validate a preset and print the `dvc exp run` it makes (or the merged params.yaml)."""
    with one_line_errors():
        preset = load_preset(name, configs)
        result, overrides = _prepare(preset, params, variant, [])
    if merged:
        typer.echo(applied_text(preset, result, variant), nl=False)
        return
    lines = [f"dvc exp run --name {shlex.quote(variant or preset.name)}"]
    lines += [f"-S {shlex.quote(item)}" for item in overrides]
    typer.echo(" \\\n    ".join(lines))


@app.command()
def apply(
    name: NameArg,
    variant: VariantOption = None,
    params: ParamsOption = PARAMS,
    configs: ConfigsOption = CONFIGS_DIR,
) -> None:
    """Write the preset merged onto params.yaml into params.yaml: the full recipe as your params.

    `git checkout params.yaml` restores the default.
    """
    with one_line_errors():
        preset = load_preset(name, configs)
        result, _ = _prepare(preset, params, variant, [])
        text = applied_text(preset, result, variant)
        validate_text(text, result.label, fix_hint(preset))
        with atomic_file(params) as tmp:
            tmp.write_text(text, encoding="utf-8")
    changed = len(result.overrides)
    typer.echo(f"{params}: {result.label} applied ({changed} settings); run: dvc repro")


@app.command()
def run(
    name: NameArg,
    queue: Annotated[
        bool, typer.Option("--queue", help="queue it (dvc queue start / dvc exp run --run-all)")
    ] = False,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="a variant of the preset (repeat; 'all': every one)"),
    ] = None,
    exp_name: Annotated[
        str | None, typer.Option("--name", "-n", help="experiment name (default: the preset's)")
    ] = None,
    set_param: Annotated[
        list[str] | None,
        typer.Option("--set-param", "-S", help="one more params.yaml key=value, after the preset"),
    ] = None,
    configs: ConfigsOption = CONFIGS_DIR,
) -> None:
    """Run the preset as a DVC experiment: `dvc exp run -S …` with its settings.

    One experiment per --variant; several need --queue.
    """
    extra = list(set_param or [])
    with one_line_errors():
        preset = load_preset(name, configs)
        variants: list[str | None] = list(select_variants(preset, variant)) if variant else [None]
        if len(variants) > 1 and not queue:
            raise ConfigError(f"{len(variants)} variants need --queue (one experiment each)")
        if exp_name and len(variants) > 1:
            raise ConfigError("--name names one experiment; several variants take their own")
        commands = []
        for row in variants:
            _, overrides = _prepare(preset, PARAMS, row, extra)
            label = exp_name or row or preset.name
            commands.append(_command([*overrides], queue=queue, name=label))
    for args in commands:
        code = subprocess.call([_dvc(), *args], stdin=subprocess.DEVNULL)
        if code != 0:
            typer.echo(f"error: dvc {' '.join(args[:2])} exited with {code}", err=True)
            raise typer.Exit(code)
