"""Shared fixtures: the repository root, the local service stack, a tiny SynthFace release,
stage runners."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from arcflow.config import SynthFaceParams
from infra.local.stack import Stack, down, load, up

ROOT = Path(__file__).resolve().parents[1]
# Test processes share the cores (xdist workers, servers, stage subprocesses): OpenMP threads
# that spin while they wait for a descheduled sibling made a training stage ~4x slower there;
# passive waiting costs ~7% on an idle machine. Every subprocess inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# DVC would start an analytics daemon (a Python process) after each command and API call:
# ~50 of them per run (0.5 s of CPU each); a test run has nothing to report.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
STACK_FOLDER = "stack"  # in the run's temp folder: the services shared by the whole run


@pytest.fixture(scope="module", autouse=True)
def _tracking_uri_stays_in_its_module() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which every later stage
    subprocess would inherit: whatever a test module points MLflow at is undone after it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before and "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(before)  # None: unset, as it was
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def _run_temp(factory: pytest.TempPathFactory) -> Path:
    """The test run's temp folder, the same for every pytest-xdist worker (each worker's own
    basetemp is a ``popen-gw<N>`` folder inside the controller's)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """An advisory lock between the processes of one test run."""
    import fcntl

    with lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """moto S3 + MLflow server (artifacts proxied to S3) + Prefect server on loopback.

    The stack of `make services-up` is reused (and left running) when it is up. Otherwise the
    first test process that needs one starts it in the run's temp folder and every other
    xdist worker reuses it; the controlling process stops it when the run ends
    (:func:`pytest_sessionfinish`).
    """
    running = load(ROOT / ".services")
    if running is not None:
        yield running
        return
    root = _run_temp(tmp_path_factory) / STACK_FOLDER
    with _exclusive(root.with_suffix(".lock")):
        stack = load(root) or up(root)
    yield stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first, by the recorded run in ``tests/module_seconds.json`` (a
    module not in it: a second per test). ``make test`` keeps this order
    (``--no-loadscope-reorder``), so xdist hands out the longest modules first and a long one
    never starts last, alone on one core."""
    from collections import Counter

    from tests.module_seconds import UNKNOWN_PER_TEST_S, load_record, module_of

    record = load_record()
    modules = [module_of(item.nodeid) for item in items]
    sizes = Counter(modules)
    cost = {m: record.get(m, UNKNOWN_PER_TEST_S * n) for m, n in sizes.items()}
    order = {id(item): -cost[m] for item, m in zip(items, modules, strict=True)}
    items.sort(key=lambda item: order[id(item)])  # stable: a module's tests keep their order


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or the only process) stops the shared stack once every worker is done."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller stops it
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:  # no temp folder, so no stack was started
        return
    down(factory.getbasetemp() / STACK_FOLDER)


@pytest.fixture(scope="session")
def mlflow_server(local_stack: Stack) -> str:
    """The local stack's `mlflow server` (SQLite backend, artifacts proxied to the S3
    endpoint); its URI."""
    return local_stack.mlflow_url


@pytest.fixture(scope="session")
def tiny_synthface() -> SynthFaceParams:
    """A SynthFace configuration small enough to generate in about a second."""
    return SynthFaceParams(
        train_identities=6,
        train_images_per_identity=4,
        val_identities=20,
        val_images_per_identity=3,
        val_pairs_per_fold=2,
        val_folds=10,
        frame_size=112,
        megaface_distractors=20,
    )


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory: pytest.TempPathFactory, tiny_synthface: SynthFaceParams) -> Path:
    """A raw SynthFace release (train.rec, val.rec, pairs.txt) in a session temp dir."""
    from arcflow.data.synthface_release import write_release

    out = tmp_path_factory.mktemp("release") / "synthface"
    write_release(tiny_synthface, out)
    return out


@pytest.fixture(scope="session")
def tiny_aligned(tmp_path_factory: pytest.TempPathFactory, tiny_release: Path) -> Path:
    """The tiny release aligned: the training set (6 identities x 4 crops)."""
    from arcflow.align.dataset import align_dataset
    from arcflow.config import AlignParams

    out = tmp_path_factory.mktemp("aligned")
    align_dataset(tiny_release, out / "train", AlignParams(workers=1), eval_out=out / "eval")
    return out / "train"


def run_stage(
    stage: str,
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stages.<stage> ARGS`` the way DVC does, capturing output.

    It runs in a fresh empty directory unless ``cwd`` is given, so outputs with default
    relative paths (metrics/, plots/, mlflow.db) never land in the repository.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *map(str, args)],
        cwd=cwd or tempfile.mkdtemp(prefix=f"stage-{stage}-"),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
