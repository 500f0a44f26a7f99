"""The align stage fanned out over a Dask cluster (flows.align_cluster): its ``--shard i/n``
parts as Prefect tasks on a 2-worker LocalCluster, then the stage's join through ``dvc repro``.

The outputs and dvc.lock must be byte for byte those of a single-process ``dvc repro align``;
a failing part must fail the flow with one line and leave no output. Flows report to the local
stack's Prefect server; the Dask cluster runs in the test process.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from arcflow.align.jobs import release_job
from arcflow.align.shards import ShardStore
from arcflow.config import AlignParams
from arcflow.data.recordio import RecordReader
from infra.local.stack import Stack
from tests.integration.flow_helpers import ROOT, flow_env, run_python, task_runs

distributed = pytest.importorskip("distributed")
pytest.importorskip("prefect_dask")

pytestmark = pytest.mark.integration

RAW = Path("data/raw/synthface")
WORK = Path("data/aligned/.train.shards")  # the stage's default shard folder
ALIGN = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["align"]
OUTS = [out if isinstance(out, str) else next(iter(out)) for out in ALIGN["outs"]]
SHARD_SIZE = 7  # 24 training images -> 4 shards; 94 shards in all


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two one-thread worker processes on loopback, closed after the module."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


def make_project(root: Path, release: Path) -> Path:
    """A git + DVC project holding the release and dvc.yaml's own align stage (its cmd, params
    and outs; of its deps only the raw data, the code being the repository's)."""
    shutil.copytree(release, root / RAW)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["align"].update(workers=1, shard_size=SHARD_SIZE)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    stage = {**ALIGN, "deps": [dep for dep in ALIGN["deps"] if dep.startswith("data/")]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"align": stage}}, sort_keys=False))
    for cmd in (["git", "init", "-q"], [_dvc(), "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def _dvc() -> str:
    return str(Path(sys.executable).with_name("dvc"))


def _env(stack: Stack) -> dict[str, str]:
    return flow_env(stack.env(), DVC_NO_ANALYTICS="1")


def _files(path: Path) -> dict[str, bytes]:
    """A file's bytes, or every file under a folder by relative path."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _break_record(rec: Path, position: int) -> None:
    """Overwrite the magic word of the record at ``position``: reading it raises."""
    with RecordReader(rec) as reader:
        offset = reader.offset(reader.keys[position])
    with rec.open("r+b") as f:
        f.seek(offset)
        f.write(b"JUNK")


def test_a_shard_store_opens_under_the_work_folder_lock(tiny_release: Path, tmp_path: Path):
    """Parts starting together check (and clear) a job's shard folder one at a time."""
    job, work = release_job(tiny_release / "train.rec"), tmp_path / "work"
    work.mkdir()
    opened = threading.Event()

    def open_store() -> None:
        ShardStore(work, job, AlignParams())
        opened.set()

    with (work / ".train.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=open_store)
        thread.start()
        assert not opened.wait(0.5), "the store was opened while another process held the lock"
        assert not (work / "train").exists()
    thread.join(30)
    assert opened.is_set() and (work / "train" / "fingerprint").is_file()


@pytest.mark.slow
def test_parts_on_dask_join_to_the_single_process_output(
    tiny_release: Path, tmp_path: Path, local_stack: Stack, cluster: distributed.LocalCluster
) -> None:
    from flows.align_cluster import stage_command

    single = make_project(tmp_path / "single", tiny_release)
    subprocess.run(
        [_dvc(), "repro", "align"], cwd=single, env=_env(local_stack), check=True,
        capture_output=True,
    )  # fmt: skip
    fanned = make_project(tmp_path / "fanned", tiny_release)
    code = (
        "import json\n"
        "from prefect_dask import DaskTaskRunner\n"
        "from flows.align_cluster import align_cluster\n"
        f"runner = DaskTaskRunner(address={cluster.scheduler_address!r})\n"
        "state = align_cluster.with_options(task_runner=runner)(\n"
        f"    repo={str(fanned)!r}, shards=3, return_state=True)\n"
        "print(json.dumps({'state': state.type.value, 'message': state.message,\n"
        "                  'flow_run_id': str(state.state_details.flow_run_id)}))\n"
    )
    result = run_python(code, fanned, _env(local_stack), timeout=600)
    assert result["state"] == "COMPLETED", result

    runs = task_runs(local_stack.prefect_url, [result["flow_run_id"]])
    parts = sorted((r["name"], r["state_type"]) for r in runs)
    assert parts == [(f"align-part-{i}-of-3", "COMPLETED") for i in range(3)]
    assert "align_part" in cluster.scheduler.task_prefixes  # the parts ran on this cluster

    for out in OUTS:
        assert _files(fanned / out) == _files(single / out), out
    assert (fanned / "dvc.lock").read_text() == (single / "dvc.lock").read_text()
    assert not (fanned / WORK).exists()
    assert stage_command(fanned) is None  # DVC: up to date, nothing to fan out
    assert stage_command(fanned, force=True) == stage_command(single, force=True)


@pytest.mark.slow
def test_a_failing_part_fails_the_flow_in_one_line_and_writes_no_output(
    tiny_release: Path, tmp_path: Path, local_stack: Stack, cluster: distributed.LocalCluster
) -> None:
    project = make_project(tmp_path / "p", tiny_release)
    _break_record(project / RAW / "train.rec", 8)  # shard 1 (images 7-13): part 1 of 3
    address = cluster.scheduler_address
    proc = subprocess.run(
        [sys.executable, "-m", "flows.align_cluster", "--shards", "3", "--address", address],
        cwd=project, env=_env(local_stack), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    error, hint = proc.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: 1 of 3 align parts failed; align --shard 1/3 exited with 1: ")
    assert "train.rec: byte offset" in error and "bad magic" in error
    assert hint.startswith("hint: ") and "rerun" in hint
    for out in (*OUTS, "dvc.lock"):
        assert not (project / out).exists(), out
    kept = sorted(p.stem for p in (project / WORK / "train").glob("shard-*.json"))
    assert kept == ["shard-00000", "shard-00002", "shard-00003"]  # the other parts' work stays
