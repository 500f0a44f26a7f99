"""Attack: params that pass a lenient validator but mean something else: "yes" read as true,
"4" as 4, ``inf`` disabling a gate, a name that climbs out of its folder. Each stops the stage
with one line naming the key; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arcflow.config import load_params
from arcflow.errors import ConfigError
from tests.conftest import run_stage

pytestmark = [pytest.mark.attack, pytest.mark.unit]

ATTACKS = {  # (section, key path, value) -> what the one-line error names
    "a string for a boolean": (("evaluate", "flip"), "yes", "evaluate.flip"),
    "a string for an integer": (("train", "batch_size"), "4", "train.batch_size"),
    "infinity disabling a gate": (("registry", "max_regression"), float("inf"), "finite"),
    "nan as a threshold": (("evaluate", "far_target"), float("nan"), "finite"),
    "a source climbing out": (("align", "source"), "..", "align.source"),
    "a hidden source name": (("align", "source"), ".git", "align.source"),
    "an import named like a path": (("imports",), {"../x": {"uri": "m.pth"}}, "imports"),
}


def _with(shipped: dict, keys: tuple[str, ...], value: object) -> dict:
    params = yaml.safe_load(yaml.safe_dump(shipped))
    target = params
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return params


@pytest.fixture(scope="module")
def shipped(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_each_bad_value_is_one_error_naming_the_key(
    attack: str, shipped: dict, tmp_path: Path
) -> None:
    keys, value, named = ATTACKS[attack]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with(shipped, keys, value)))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_yaml_1_2_floats_are_numbers_not_strings(shipped: dict, tmp_path: Path) -> None:
    """Strict types must not punish ``1e-4`` (PyYAML reads it as a string; DVC as a float)."""
    text = yaml.safe_dump(shipped)
    assert "far_target: 0.001" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("far_target: 0.001", "far_target: 2e-3"))
    assert load_params(path, ("evaluate",)).evaluate.far_target == 2e-3


def test_a_stage_given_a_bad_value_stops_before_writing(shipped: dict, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(shipped, ("align", "source"), "..")))
    before = sorted(tmp_path.rglob("*"))
    proc = run_stage(
        "align", "--raw", "data/raw/x", "--out", "out", "--eval-out", "eval", cwd=tmp_path
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: params.yaml: align.source: ")
    assert sorted(tmp_path.rglob("*")) == before
