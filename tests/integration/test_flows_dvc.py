"""flows.dvc_repo on a tiny git + DVC project: the stage order comes from DVC's stage graph (foreach
items, dependencies defined after their users, frozen stages left out), and whether a stage ran
comes from DVC's API, not its wording: a stage that prints DVC's "didn't change" line still ran."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import dvc_repo, pipeline

pytestmark = pytest.mark.integration

LIAR = "Stage 'merge' didn't change, skipping"  # what a stage may print of its own accord

DVC_YAML = {
    "stages": {
        # users before what they use: the order must come from the graph, not the file
        "report": {"cmd": "cat merged.txt > report.txt", "deps": ["merged.txt"],
                   "outs": ["report.txt"]},
        "merge": {"cmd": f"cat part_a.txt part_b.txt > merged.txt && echo \"{LIAR}\"",
                  "deps": ["part_a.txt", "part_b.txt"], "outs": ["merged.txt"]},
        "make": {"foreach": "${parts}",
                 "do": {"cmd": "echo ${item} > part_${key}.txt", "params": ["parts.${key}"],
                        "outs": ["part_${key}.txt"]}},
        "frozen": {"cmd": "echo never > frozen.txt", "outs": ["frozen.txt"], "frozen": True},
        "broken": {"cmd": "echo 'broken: out of cheese' >&2 && exit 3", "deps": ["report.txt"],
                   "outs": ["never.txt"], "frozen": True},
    }
}  # fmt: skip


def make_repo(root: Path) -> Path:
    """git init + dvc init + dvc.yaml above, with params ``parts: {a: 1, b: 2}``."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump({"parts": {"a": 1, "b": 2}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    exe = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [exe, "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def test_stage_order_follows_the_graph_with_foreach_items_and_without_frozen(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "p")
    order = dvc_repo.stage_order(repo)
    assert sorted(order) == ["make@a", "make@b", "merge", "report"]
    assert order.index("merge") > max(order.index("make@a"), order.index("make@b"))
    assert order.index("report") > order.index("merge")


def test_stage_order_names_the_repo_when_dvc_yaml_is_broken(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "p")
    (repo / "dvc.yaml").write_text("stages:\n  x: [unclosed\n")
    with pytest.raises(dvc_repo.DvcError, match=str(repo)):
        dvc_repo.stage_order(repo)


def test_ran_or_skipped_comes_from_dvc_not_from_the_stage_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "p")
    logged: list[str] = []
    for stage in ("make@a", "make@b"):
        assert dvc_repo.reproduce(repo, stage, logged.append) is True
    # merge prints DVC's own "didn't change" line for itself, yet it ran
    assert dvc_repo.reproduce(repo, "merge", logged.append) is True
    monkeypatch.setattr(pipeline, "get_run_logger", lambda: logging.getLogger("test"))
    (repo / "part_b.txt").write_text("changed\n")  # merge must run again: so says the flow
    assert pipeline.run_stage.fn(repo, "merge") == "ran"
    (repo / "part_b.txt").write_text("2\n")
    assert dvc_repo.reproduce(repo, "merge", logged.append) is True
    assert LIAR in logged  # the stage's output is streamed to the log, line by line
    assert "Running stage 'merge':" in logged
    assert (repo / "merged.txt").read_text().split() == ["1", "2"]

    logged.clear()
    assert dvc_repo.reproduce(repo, "merge", logged.append) is False  # unchanged: skipped
    assert "Running stage 'merge':" not in logged  # DVC's "didn't change" line only

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["parts"]["b"] = 22
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert dvc_repo.reproduce(repo, "make@a", None) is False  # its item did not change
    assert dvc_repo.reproduce(repo, "make@b", None) is True
    assert dvc_repo.reproduce(repo, "merge", None) is True
    assert (repo / "merged.txt").read_text().split() == ["1", "22"]


def test_a_failing_stage_raises_with_dvcs_error_and_its_output(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "p")
    for stage in ("make@a", "make@b", "merge", "report"):
        dvc_repo.reproduce(repo, stage)
    subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "unfreeze", "broken"],
        cwd=repo, check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(dvc_repo.DvcError) as err:
        dvc_repo.reproduce(repo, "broken")
    message = str(err.value)
    assert message.startswith("dvc repro --single-item broken exited with 255:"), message
    assert "broken: out of cheese" in message
    assert "ERROR: failed to reproduce 'broken': failed to run: " in message  # as dvc says it
    assert "Traceback" not in message
