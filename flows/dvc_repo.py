"""DVC, as the flows use it: the stage order, one stage reproduced with its output streamed, the
remote, the metrics.

The flows never re-declare the pipeline, and never read DVC's wording: the stages and their
order come from DVC's index (the stage graph of ``dvc.yaml``, planned by the same function
``dvc repro`` uses), and whether a stage ran comes from what ``Repo.reproduce`` returns. That
call runs in a child Python process (:func:`reproduce`) so that DVC's lines and the stage's own
output can be streamed line by line into the flow's log, as with ``dvc repro``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dvc.stage import PipelineStage

PROJECT_FILE = "dvc.yaml"
# the child that reproduces a stage imports this very module (not the repository's copy of it)
CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); from flows.dvc_repo import _reproduce_here; "
    "from pathlib import Path; sys.exit(_reproduce_here(sys.argv[2], Path(sys.argv[3])))"
)


class DvcError(RuntimeError):
    """A dvc command failed; the message ends with its last output lines."""


def _dvc() -> str:
    """The dvc next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def _env() -> dict[str, str]:
    """The flow's environment, with this interpreter's bin first on PATH (the stages' ``python``
    is the project's, even when the flow was started without activating its venv), and one
    line per message in the logs (no progress bars redrawn with \r)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "ARCFLOW_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


def _stream(
    argv: list[str], repo: Path, label: str, log: Callable[[str], None] | None = None
) -> str:
    """Run ``argv`` in ``repo``, passing each output line to ``log``; raise DvcError naming
    ``label`` when it fails."""
    proc = subprocess.Popen(
        argv,
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
        raise DvcError(f"{label} exited with {proc.returncode}:\n{tail}")
    return "\n".join(lines)


def run(args: list[str], repo: Path, log: Callable[[str], None] | None = None) -> str:
    """Run ``dvc ARGS`` in ``repo``, passing each output line to ``log``; raise DvcError."""
    return _stream([_dvc(), *args], repo, f"dvc {' '.join(args)}", log)


def reproduce(repo: Path, stage: str, log: Callable[[str], None] | None = None) -> bool:
    """``dvc repro --single-item <stage>`` in ``repo``, its output passed to ``log`` line by
    line; True when the stage ran (or was restored from the run cache), False when DVC found
    it unchanged and skipped it. Raises DvcError when it fails."""
    with tempfile.TemporaryDirectory(prefix="arcflow-repro-") as tmp:
        result = Path(tmp) / "reproduced.json"
        package_root = str(Path(__file__).resolve().parents[1])
        argv = [sys.executable, "-c", CHILD, package_root, stage, str(result)]
        _stream(argv, repo, f"dvc repro --single-item {stage}", log)
        return bool(json.loads(result.read_text()))


def _reproduce_here(stage: str, result: Path) -> int:
    """In the child process, in the repository: reproduce ``stage`` alone through DVC's API
    and write the addresses of the stages it reproduced to ``result``. DVC's own log (and the
    stage's output) go to stdout and stderr as with ``dvc repro``; failures exit 255 like it."""
    import logging

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as dvc_repo:
            done = dvc_repo.reproduce(stage, single_item=True)
    except DvcException:
        # DVC's handlers: "ERROR: failed to reproduce 'x': <its causes>", as the dvc CLI says
        logging.getLogger("dvc").exception("")
        return 255
    result.write_text(json.dumps([s.addressing for s in done]))
    return 0


def _address(stage: PipelineStage) -> str:
    """A stage's address relative to the repository root (``name`` for the root dvc.yaml,
    ``sub/dvc.yaml:name`` otherwise), whatever this process's working directory."""
    where = stage.path_in_repo
    return stage.name if where == PROJECT_FILE else f"{where}:{stage.name}"


def stage_order(repo: Path) -> list[str]:
    """Every stage ``dvc repro`` runs for ``repo``'s dvc.yaml (its stages and the stages they
    depend on; foreach items such as ``download@synthface`` included, frozen ones not), in the
    order it runs them."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph, plan_repro
    from dvc.stage import PipelineStage

    root = repo.resolve()
    try:
        with Repo(str(root)) as dvc_repo:
            targets = dvc_repo.stage.collect(str(root / PROJECT_FILE))
            planned = plan_repro(get_active_graph(dvc_repo.index.graph), targets)
            stages = [_address(s) for s in planned if isinstance(s, PipelineStage) and not s.frozen]
    except DvcException as exc:
        raise DvcError(f"{root}: {exc}") from exc
    if not stages:
        raise DvcError(f"{root}: dvc.yaml defines no stage")
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
