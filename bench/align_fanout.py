"""The align stage fanned out on Dask (flows.align_cluster) against ``dvc repro align``.

PREFECT_API_URL=http://… python bench/align_fanout.py                    # 1000 ids x 16 frames
python bench/align_fanout.py --identities 250 --shards 2 8 --runners dask ray

Builds a git + DVC project holding a SynthFace release (training split, 250x250 frames) and
dvc.yaml's align stage. Times first the task runners' own cost: ``--tasks`` empty Prefect tasks
on each runner (``ray``: prefect-ray, when installed), start included and not. Then, end to end
as a user sees them: ``dvc repro align`` with ``align.workers`` 1 and ``--workers``, one part
with nothing left to align (its fixed cost), and the ``arcflow-align-cluster`` flow with
``--shards N`` on an already running ``LocalCluster`` of ``--workers`` (its start timed on its
own). Every alignment's outputs must equal the first one's, byte for byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUTS = ("data/aligned/train", "metrics/align.json")


def project(root: Path, identities: int, images: int, shard_size: int) -> Path:
    """A git + DVC project with the release in data/raw/synthface and the align stage."""
    from arcflow.config import SynthFaceParams
    from arcflow.data.synthface_release import write_release

    write_release(
        SynthFaceParams(
            train_identities=identities,
            train_images_per_identity=images,
            frame_size=250,
            eval_sets=[],
        ),
        root / "data/raw/synthface",
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["align"].update(shard_size=shard_size)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["align"]
    stage["deps"] = [dep for dep in stage["deps"] if dep.startswith("data/")]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"align": stage}}, sort_keys=False))
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def set_workers(root: Path, workers: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["align"]["workers"] = workers
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def outputs(root: Path) -> dict[str, bytes]:
    """Every output file's bytes; the outputs and dvc.lock are then removed (a fresh run)."""
    found = {}
    for out in OUTS:
        path = root / out
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found.update({str(p.relative_to(root)): p.read_bytes() for p in files})
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / "dvc.lock").unlink()
    return found


def timed(what: str, run: Callable[[], object], frames: int | None = None) -> float:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    rate = f"{frames / seconds:>8.0f} faces/s" if frames else ""
    print(f"{what:<52} {seconds:>8.2f} s {rate}", flush=True)
    return seconds


def empty_tasks(runner: object, tasks: int) -> None:
    """``tasks`` empty Prefect tasks on ``runner``: the whole flow (runner start and stop
    included), its first task, then the tasks alone."""
    from prefect import flow, task

    @task
    def nothing(i: int) -> int:
        return i

    @flow(task_runner=runner)
    def fan(n: int) -> tuple[float, float]:
        start = time.perf_counter()
        nothing.submit(-1).result()  # the runner starts (or connects) on first use
        first = time.perf_counter() - start
        start = time.perf_counter()
        for future in [nothing.submit(i) for i in range(n)]:
            future.result()
        return first, time.perf_counter() - start

    start = time.perf_counter()
    first, rest = fan(tasks)
    total = time.perf_counter() - start
    name = type(runner).__name__
    print(f"{name}: flow {total:.2f} s; first task {first:.2f} s; {tasks} more {rest:.2f} s")
    print(f"{name}: {1000 * rest / tasks:.0f} ms per task, {tasks / rest:.1f} tasks/s", flush=True)


def runner_for(name: str, workers: int) -> object:
    if name == "ray":
        from prefect_ray import RayTaskRunner

        return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False})
    from flows.align_cluster import local_cluster

    return local_cluster(workers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--identities", type=int, default=1000)
    p.add_argument("--images", type=int, default=16, help="frames per identity")
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--shards", type=int, nargs="+", default=[2, 8], help="flow parts to time")
    p.add_argument("--workers", type=int, default=2, help="Dask workers / stage processes")
    p.add_argument("--tasks", type=int, default=40, help="empty tasks per runner")
    p.add_argument("--runners", nargs="+", default=["dask"], choices=["dask", "ray"])
    args = p.parse_args()
    os.environ.update(CI="true", DVC_NO_ANALYTICS="1")  # no progress bars in the timings
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load {load}", flush=True)
    for name in args.runners:
        empty_tasks(runner_for(name, args.workers), args.tasks)
    if "dask" not in args.runners:
        return
    import distributed
    from prefect_dask import DaskTaskRunner

    from flows.align_cluster import align_cluster, stage_command

    work = Path(tempfile.mkdtemp(prefix="align-fanout-"))
    try:
        root = project(work, args.identities, args.images, args.shard_size)
        frames = args.identities * args.images
        print(f"{frames} frames of 250x250, shards of {args.shard_size}", flush=True)
        dvc = [str(Path(sys.executable).with_name("dvc")), "repro", "align"]
        reference = None
        for workers in (1, args.workers):
            set_workers(root, workers)
            run = partial(subprocess.run, dvc, cwd=root, check=True, capture_output=True)
            timed(f"dvc repro align, align.workers {workers}", run, frames)
            reference = reference or outputs(root)
        set_workers(root, 1)
        part = f"{stage_command(root, force=True)} --shard 0/1"
        run = partial(subprocess.run, part, shell=True, cwd=root, check=True, capture_output=True)
        run()  # every shard done: the next part has nothing left to align
        timed("one part with no shard left (start, imports, listing)", run)
        shutil.rmtree(root / "data/aligned/.train.shards")
        start = time.perf_counter()
        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        with cluster:
            cluster.wait_for_workers(args.workers)
            print(f"{'LocalCluster start':<52} {time.perf_counter() - start:>8.2f} s")
            fanned = align_cluster.with_options(
                task_runner=DaskTaskRunner(address=cluster.scheduler_address)
            )
            for shards in args.shards:
                run = partial(fanned, repo=str(root), shards=shards)
                what = f"flow, {shards} parts on {args.workers} Dask workers (align.workers 1)"
                timed(what, run, frames)
                assert outputs(root) == reference, "the fanned-out outputs differ"
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
