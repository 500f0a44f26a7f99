"""The align stage fanned out over a Dask cluster: its shards as Prefect tasks, then its join.

    python -m flows.align_cluster --shards N [--address tcp://scheduler:8786] [--workers K]
                                  [--force] [--repo .]

``dvc repro align`` stays one process on one machine (with ``align.workers`` processes). This
flow does the same work in ``N`` parts on prefect-dask's ``DaskTaskRunner``: the scheduler at
``--address``, or a ``LocalCluster`` of ``K`` one-thread worker processes. Part ``i`` is one
task running the align stage's own command, read from dvc.yaml through DVC (never re-declared),
with ``--shard i/N`` added, in the checkout: it fills the stage's shard folder with shards
``i, i+N, …``. Once every part is done, ``dvc repro --single-item align`` runs the stage, which
finds every shard finished and only joins them into its outputs (written atomically), and DVC
records dvc.lock as for any run. The outputs are the same bytes as a single-process run: a shard
never depends on who made it.

A part that fails fails the flow with one line, once the other parts have finished; the join
does not run, so no output is touched, and a rerun keeps every finished shard. Workers must see
the checkout at the same path (a shared filesystem) and run the project's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect_dask import DaskTaskRunner

from arcflow.config import load_params
from arcflow.errors import ArcFlowError, ConfigError, first_line
from arcflow.failures import one_line_errors
from flows import dvc_repo
from flows.workspace import workspace_lock

STAGE = "align"


class AlignPartError(ArcFlowError):
    """A part of the fanned-out align stage failed (or its worker was lost)."""

    hint = "fix the cause and rerun: finished shards are kept and not aligned again"


def stage_command(repo: Path, stage: str = STAGE, *, force: bool = False) -> str | None:
    """``stage``'s command as DVC resolves it from dvc.yaml, or None when ``dvc status`` finds
    the stage unchanged (and ``force`` is not set)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not force:
        said = dvc_repo.run(["status", "--json", stage], repo).splitlines()  # JSON last
        if not json.loads(said[-1] if said else "{}"):
            return None
    try:
        with Repo(str(repo)) as project:
            (found,) = project.stage.collect(str(repo / "dvc.yaml") + f":{stage}")
    except DvcException as exc:
        raise dvc_repo.DvcError(f"{repo}: {first_line(exc)}") from exc
    if not isinstance(found.cmd, str):
        raise ConfigError(f"dvc.yaml: stage {stage}'s cmd must be one command to add --shard to")
    return found.cmd


def local_cluster(workers: int) -> DaskTaskRunner:
    """A task runner on a temporary ``LocalCluster``: ``workers`` processes, one thread each."""
    kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
    return DaskTaskRunner(cluster_kwargs=kwargs)


def task_runner(address: str | None, workers: int) -> DaskTaskRunner:
    """The Dask scheduler at ``address``, else a local cluster of ``workers`` processes."""
    return DaskTaskRunner(address=address) if address else local_cluster(workers)


@task(task_run_name="align-part-{part}-of-{parts}")
def align_part(repo: Path, command: str, part: int, parts: int) -> None:
    """Run ``command`` with ``--shard part/parts`` in ``repo`` (on a Dask worker), its output
    streamed into the task's log; raise :class:`AlignPartError` with its error line."""
    log = get_run_logger()
    bin_dir = str(Path(sys.executable).parent)  # the worker's environment runs the stage
    env = {
        **os.environ,
        "PATH": os.pathsep.join(p for p in (bin_dir, os.environ.get("PATH")) if p),
        "ARCFLOW_PROGRESS": "0",  # one line per message in the log
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        f"{command} --shard {part}/{parts}",
        shell=True,  # as DVC runs a stage's cmd
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    last, error = "", ""
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            log.info(line)
            last = line
            error = line.removeprefix("error: ") if line.startswith("error: ") else error
    if proc.wait() != 0:
        said = error or last or "no output"
        raise AlignPartError(f"align --shard {part}/{parts} exited with {proc.returncode}: {said}")


@flow(name="arcflow-align-cluster", task_runner=local_cluster(2))
def align_cluster(repo: str = ".", shards: int = 2, force: bool = False) -> dict[str, Any]:
    """Every part of the align stage as a task (``--shard i/shards``), then the stage's join
    through ``dvc repro``; returns whether it aligned and in how many parts."""
    if shards < 1:
        raise ConfigError(f"shards must be at least 1, got {shards}")
    root = Path(repo).resolve()
    log = get_run_logger()
    timeout = load_params(root / "params.yaml", ("flows",)).flows.workspace_lock_timeout_s
    with workspace_lock(root, timeout):
        command = stage_command(root, force=force)
        if command is None:
            log.info("%s didn't change: nothing to align (--force aligns anyway)", STAGE)
            return {"aligned": False, "parts": 0}
        futures = [align_part.submit(root, command, part, shards) for part in range(shards)]
        failed: list[BaseException] = []
        for future in futures:  # every part runs to its end: finished shards are kept
            try:
                future.result()
            except Exception as exc:  # a part's own error, or its Dask worker lost
                failed.append(exc)
        if failed:
            first = first_line(failed[0])
            raise AlignPartError(f"{len(failed)} of {shards} align parts failed; {first}")
        dvc_repo.run(
            ["repro", "--single-item", *(["--force"] if force else []), STAGE], root, log.info
        )
    return {"aligned": True, "parts": shards}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repo", default=".", help="the checkout (default: here)")
    p.add_argument("--shards", type=int, required=True, help="parts to split the stage into")
    p.add_argument("--address", help="a running Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, default=2, help="local cluster: worker processes")
    p.add_argument("--force", action="store_true", help="align even when DVC finds no change")
    args = p.parse_args()
    if args.shards < 1 or args.workers < 1:
        p.error("--shards and --workers must be at least 1")
    load_params(Path(args.repo) / "params.yaml", ("flows", "align"))  # fail before the flow
    runner = task_runner(args.address, args.workers)
    align_cluster.with_options(task_runner=runner)(
        repo=args.repo, shards=args.shards, force=args.force
    )


if __name__ == "__main__":
    with one_line_errors():
        main()
