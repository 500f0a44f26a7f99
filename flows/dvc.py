"""The DVC command line, as the flows use it: the stage order, streamed runs, the remote.

The flows never re-declare the pipeline: the stages and their order come from ``dvc.yaml``
through DVC itself (``dvc repro --dry --force`` lists every stage in execution order).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


class DvcError(RuntimeError):
    """A dvc command failed; the message ends with its last output lines."""


def _dvc() -> str:
    """The dvc next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def _env() -> dict[str, str]:
    # one line per message in the logs: no progress bars redrawn with \r
    return {**os.environ, "ARCFLOW_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


def run(args: list[str], repo: Path, log: Callable[[str], None] | None = None) -> str:
    """Run ``dvc ARGS`` in ``repo``, passing each output line to ``log``; raise DvcError."""
    proc = subprocess.Popen(
        [_dvc(), *args],
        cwd=repo,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        for line in raw.rstrip("\n").split("\r"):
            if line.strip():
                lines.append(line)
                if log is not None:
                    log(line)
    if proc.wait() != 0:
        tail = "\n".join(lines[-20:])
        raise DvcError(f"dvc {' '.join(args)} exited with {proc.returncode}:\n{tail}")
    return "\n".join(lines)


def stage_order(repo: Path) -> list[str]:
    """Every stage of ``repo``'s dvc.yaml in the order ``dvc repro`` would run them."""
    out = run(["repro", "--dry", "--force"], repo)
    stages = [m.group(1) for line in out.splitlines() if (m := STAGE_LINE.match(line))]
    if not stages:
        raise DvcError(f"{repo}: dvc.yaml defines no stage")
    return stages


def default_remote(repo: Path) -> str | None:
    """The name of the default DVC remote, or None when none is configured."""
    proc = subprocess.run(
        [_dvc(), "remote", "default"], cwd=repo, env=_env(), capture_output=True, text=True
    )
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name else None


def metrics(repo: Path) -> dict:
    """``dvc metrics show --json`` of the workspace: {file: {metric: value}}."""
    shown = json.loads(run(["metrics", "show", "--json"], repo) or "{}")
    workspace = next(iter(shown.values()), {}) if shown else {}
    return {path: entry.get("data", {}) for path, entry in workspace.get("data", {}).items()}
