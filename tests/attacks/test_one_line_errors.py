"""Attack: hostile or broken inputs at every entry point (stages, the ``arcflow`` CLI, the
flows' command lines) end in one ``error:`` line (and a ``hint:``), exit 1, and write nothing:
never a traceback wall.

Stages run in-process (``stages.common.run`` around their ``main``, as ``python -m`` does) so
that the sweep costs one import, not one interpreter per case; one flow runs as a real
``python -m`` subprocess to cover the ``__main__`` wrapper itself.
"""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from arcflow.cli import app
from arcflow.failures import explain
from stages.common import run

pytestmark = [pytest.mark.attack, pytest.mark.unit]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of broken inputs: random bytes named like models and images, a params file
    that is not UTF-8, one whose sources ask for the impossible, bad JSON, a junk RecordIO."""
    root = tmp_path_factory.mktemp("broken")
    rng = __import__("random").Random(0)
    for name in ("junk.pt", "junk.onnx", "junk.jpg", "rawjunk/train.rec", "rawjunk/train.idx"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    (root / "binary.yaml").write_bytes(b"\xff\xfe train: {}")
    (root / "bad.json").write_text('{"lfw": ')
    (root / "empty").mkdir()
    (root / "tree").mkdir()
    (root / "tree" / "a.txt").write_text("a")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree = str(root / "tree")
    params["data"]["sources"].update(
        summed={"uri": tree, "sha256": "0" * 64}, unpacked={"uri": tree, "extract": True}
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


STAGE_CASES = {  # name -> (stage, args with {d} for the inputs folder, what the error names)
    "params not UTF-8": ("train", "--params {d}/binary.yaml --data {d}/empty --out {d}/o", "UTF-8"),
    "checksum on a directory": (
        "download",
        "--params {d}/params.yaml --source summed --out {d}/o",
        "checksums apply to single files",
    ),
    "extract on a directory": (
        "download",
        "--params {d}/params.yaml --source unpacked --out {d}/o",
        "extract applies to archives",
    ),
    "random bytes as a backbone": (
        "evaluate",
        "--data {d}/empty --model {d}/junk.pt --metrics {d}/o/m.json",
        "refused without running it",
    ),
    "random bytes as ONNX": (
        "evaluate",
        "--data {d}/empty --model {d}/junk.onnx --metrics {d}/o/m.json",
        "not a loadable ONNX model",
    ),
    "a JPEG as a model": (
        "evaluate",
        "--data {d}/empty --model {d}/junk.jpg --metrics {d}/o/m.json",
        "not a model this can load",
    ),
    "a folder that is no model": (
        "evaluate",
        "--data {d}/empty --model {d}/empty --metrics {d}/o/m.json",
        "no import.json",
    ),
    "random bytes as RecordIO": ("align", "--raw {d}/rawjunk --out {d}/o", "train.idx"),
    "random bytes to export": (
        "export",
        "--model {d}/junk.pt --run {d}/bad.json --out {d}/o/x.onnx --data {d}/empty",
        "junk.pt",
    ),
    "a metrics file cut short": (
        "leaderboard",
        "--own {d}/bad.json --details {d}/bad.json --imported {d}/empty --out {d}/o/lb.md "
        "--table {d}/o/lb.json",
        "not JSON",
    ),
}


def _one_error(stderr: str, named: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0], stderr


@pytest.mark.parametrize("case", sorted(STAGE_CASES))
def test_each_stage_failure_is_one_line(
    case: str,
    inputs: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage, args, named = STAGE_CASES[case]
    monkeypatch.chdir(inputs / "empty")  # default outputs (mlflow.db, metrics/) land nowhere
    if "--params" not in args:
        args = "--params {d}/params.yaml " + args
    monkeypatch.setattr(sys, "argv", [stage, *args.format(d=inputs).split()])
    with pytest.raises(SystemExit) as exited:
        run(importlib.import_module(f"stages.{stage}").main)
    assert exited.value.code == 1
    _one_error(capsys.readouterr().err, named)
    assert not (inputs / "o").exists()  # nothing written, not even an empty folder
    assert not list((inputs / "empty").iterdir())


CLI_CASES = {
    "validate a file that is not UTF-8": ("validate {d}/binary.yaml", "UTF-8"),
    "import random bytes": ("import-model {d}/junk.pt --out {d}/o", "neither a PyTorch"),
    "import a missing file": ("import-model {d}/nope.onnx --out {d}/o", "not found"),
    "embed with no face model": (
        "embed {d}/junk.jpg --model {d}/empty --out {d}/o/e.npy",
        "not a face model",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_each_cli_failure_is_one_line(case: str, inputs: Path) -> None:
    args, named = CLI_CASES[case]
    result = CliRunner().invoke(app, args.format(d=inputs).split())
    assert result.exit_code == 1, result.output
    _one_error(result.stderr, named)
    assert not (inputs / "o").exists()


def test_a_flow_command_line_fails_in_one_line_before_starting_prefect(inputs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ARCFLOW_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(inputs / "empty")],
        capture_output=True,
        text=True,
        env=env,
        cwd=inputs,
        timeout=120,
    )
    assert proc.returncode == 1
    _one_error(proc.stderr, "params.yaml: file not found")
    assert "Starting temporary server" not in proc.stderr  # refused before any flow run


def test_what_the_machine_says_is_explained_and_bugs_are_not() -> None:
    from mlflow.exceptions import MlflowException

    assert explain(MemoryError())[0] == "out of memory"
    assert explain(PermissionError(errno.EACCES, "Permission denied", "/x/y")) == (
        "/x/y: permission denied",
        "check the file's owner and mode",
    )
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.rec")
    assert explain(full) == (
        "no space left on the device writing /data/out.rec",
        "free disk space and rerun",
    )
    assert (
        explain(FileNotFoundError(errno.ENOENT, "gone", "a.json"), missing_hint="dvc repro")[1]
        == "dvc repro"
    )
    assert explain(MlflowException("RESOURCE_DOES_NOT_EXIST: run x\nmore"))[0] == (
        "MLflow: RESOURCE_DOES_NOT_EXIST: run x"
    )
    assert explain(ValueError("a bug")) is None  # keeps its traceback
    assert explain(OSError("no file involved")) is None
