"""``arcflow preset run --queue`` with the real ``dvc`` on a tiny git + DVC repository: each
preset (and ablation row) is a queued DVC experiment whose params are the merged preset, and
the workspace is left as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from arcflow.cli import app
from arcflow.presets import dump, load_preset, merge_preset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))
STAGE = {"stages": {"train": {"cmd": "python -c 'print(1)'", "params": ["train", "data"]}}}


def _run(repo: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A committed repository with this project's params.yaml and presets, and one stage."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    _run(tmp_path, "git", "init", "-q")
    _run(tmp_path, "git", "config", "user.name", "t")
    _run(tmp_path, "git", "config", "user.email", "t@t")
    _run(tmp_path, DVC, "init", "-q")
    _run(tmp_path, "git", "add", "-A")
    _run(tmp_path, "git", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    try:
        yield tmp_path
    finally:  # leave no queued experiment behind
        subprocess.run([DVC, "queue", "remove", "--all"], cwd=tmp_path, capture_output=True)


def _queued_params(repo: Path) -> dict[str, dict]:
    """params.yaml of each queued experiment, by name, as `dvc exp show` reports it."""
    shown = json.loads(_run(repo, DVC, "exp", "show", "--json"))
    return {
        rev["name"]: rev["data"]["params"]["params.yaml"]["data"]
        for baseline in shown
        for exp in baseline.get("experiments") or []
        for rev in exp["revs"]
    }


def _merged(name: str, variant: str | None = None) -> dict:
    preset = load_preset(name, ROOT / "configs")
    return yaml.safe_load(dump(merge_preset(preset, ROOT / "params.yaml", variant).document))


def test_preset_run_queue_queues_dvc_experiments_with_the_presets_params(repo: Path) -> None:
    before = (repo / "params.yaml").read_text()
    runner = CliRunner()
    result = runner.invoke(app, ["preset", "run", "cpu_smoke", "--queue"])
    assert result.exit_code == 0, result.output
    rows = ["--variant", "cosface", "--variant", "triplet"]
    result = runner.invoke(app, ["preset", "run", "casia_r50_ablation", "--queue", *rows])
    assert result.exit_code == 0, result.output

    status = _run(repo, DVC, "queue", "status")
    for name in ("cpu_smoke", "cosface", "triplet"):
        assert name in status and "Queued" in status
    queued = _queued_params(repo)
    assert queued["cpu_smoke"] == _merged("cpu_smoke")
    assert queued["cosface"] == _merged("casia_r50_ablation", "cosface")
    assert queued["triplet"] == _merged("casia_r50_ablation", "triplet")
    assert queued["cpu_smoke"]["train"]["epochs"] == 2
    assert queued["cosface"]["train"]["head"] == "cosface"
    assert list(queued["triplet"]["data"]["sources"]) == ["faces_webface"]

    assert (repo / "params.yaml").read_text() == before  # the workspace is untouched
    assert _run(repo, "git", "status", "--porcelain") == ""
    _run(repo, DVC, "queue", "remove", "--all")
    assert "No experiment tasks in the queue" in _run(repo, DVC, "queue", "status")


def test_extra_set_params_apply_after_the_preset(repo: Path) -> None:
    args = ["preset", "run", "ms1mv2_r100_arcface", "--queue", "-n", "mine"]
    uri = "s3://my-bucket/faces_emore.zip"
    args += ["-S", f"data.sources.faces_emore.uri={uri}", "-S", "train.lr=0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = _merged("ms1mv2_r100_arcface")
    expected["data"]["sources"]["faces_emore"]["uri"] = uri
    expected["train"]["lr"] = 0.2
    assert _queued_params(repo)["mine"] == expected
