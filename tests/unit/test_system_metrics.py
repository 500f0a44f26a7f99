"""GPU system metrics in MLflow: the train stage opens its run with ``log_system_metrics``
(arcflow.tracking.run.start_run), and MLflow samples the GPUs only when its GPU monitor can
import ``pynvml`` (the `gpu` group: nvidia-ml-py, in the venv and the training image) and
NVML finds a driver.

No GPU here: NVML is replaced by a fake with two GPUs to show the GPU monitor joins and its
metrics reach the run, and by one that finds no driver to show the monitor degrades to CPU,
disk and network with one log line. The metric logger is a stub: nothing touches a store.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

pytestmark = pytest.mark.unit

MONITOR_LOGGER = "mlflow.system_metrics.system_metrics_monitor"


def test_the_nvml_binding_is_installed() -> None:
    """`pynvml` comes from nvidia-ml-py (NVIDIA's binding), not the unmaintained `pynvml`."""
    try:
        import pynvml
    except ImportError:  # pragma: no cover - the failure this test exists for
        pytest.fail("pynvml is missing: install the project's `gpu` group (make setup)")
    assert "nvidia-ml-py" in importlib.metadata.packages_distributions()["pynvml"]
    from mlflow.system_metrics.metrics import gpu_monitor

    assert gpu_monitor.pynvml is pynvml  # what MLflow's GPU monitor uses


class RecordingLogger:
    """Stands in for MLflow's BatchMetricsLogger: keeps what the monitor would log."""

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None) -> None:
        self.run_id = run_id
        self.batches: list[tuple[dict[str, float], int]] = []

    def record_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.batches.append((dict(metrics), step or 0))

    def flush(self) -> None:
        pass


@pytest.fixture
def monitor_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[logging.LogRecord]]:
    """The monitor's log records (MLflow's loggers do not propagate to the root logger)."""
    import mlflow.utils.autologging_utils as autologging_utils

    monkeypatch.setattr(autologging_utils, "BatchMetricsLogger", RecordingLogger)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(MONITOR_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def new_monitor(tmp_path: Path) -> SystemMetricsMonitor:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    return SystemMetricsMonitor("0" * 32, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def fake_nvml(monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
    """NVML with ``gpus`` devices: 40% busy, a quarter of 80 GB used, 350 of 700 W."""
    import pynvml

    handles = [SimpleNamespace(index=i) for i in range(gpus)]
    fakes = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: gpus,
        "nvmlDeviceGetHandleByIndex": lambda i: handles[i],
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=20e9, total=80e9, free=60e9),
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=40, memory=10),
        "nvmlDeviceGetPowerUsage": lambda h: 350_000,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(pynvml, name, fake)


def test_gpus_found_by_nvml_are_sampled_into_the_run(
    monkeypatch: pytest.MonkeyPatch, monitor_log: list[logging.LogRecord], tmp_path: Path
) -> None:
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

    fake_nvml(monkeypatch, gpus=2)
    monitor = new_monitor(tmp_path)
    gpu = [m for m in monitor.monitors if isinstance(m, GPUMonitor)]
    assert len(gpu) == 1 and gpu[0].num_gpus == 2
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    (logged, step), *_ = monitor.mlflow_logger.batches
    assert step == 0
    for i in (0, 1):
        assert logged[f"system/gpu_{i}_utilization_percentage"] == 40
        assert logged[f"system/gpu_{i}_memory_usage_percentage"] == 25
        assert logged[f"system/gpu_{i}_power_usage_watts"] == 350
    assert "system/cpu_utilization_percentage" in logged
    assert not [r for r in monitor_log if r.levelno >= logging.WARNING]


def test_without_a_gpu_driver_the_monitor_keeps_cpu_disk_and_network(
    monkeypatch: pytest.MonkeyPatch, monitor_log: list[logging.LogRecord], tmp_path: Path
) -> None:
    """A CPU host or a container without the NVIDIA runtime: no crash, one INFO line."""
    import pynvml

    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    monitor = new_monitor(tmp_path)
    kinds = {type(m).__name__ for m in monitor.monitors}
    assert kinds == {"CPUMonitor", "DiskMonitor", "NetworkMonitor"}
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    (logged, _), *_ = monitor.mlflow_logger.batches
    assert "system/cpu_utilization_percentage" in logged
    assert not [key for key in logged if "gpu" in key]
    messages = [r.getMessage() for r in monitor_log if r.levelno >= logging.INFO]
    assert any("Skip logging GPU metrics" in m for m in messages), messages
    assert not [r for r in monitor_log if r.levelno >= logging.WARNING]


def test_the_train_stage_asks_for_system_metrics() -> None:
    """The monitor above runs only if training opens its run with system metrics on."""
    import ast

    source = Path(__file__).resolve().parents[2] / "stages" / "train.py"
    calls = [
        node
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "start_run"
    ]
    assert calls, "stages/train.py opens its MLflow run with start_run"
    flags = {kw.arg: kw.value for call in calls for kw in call.keywords}
    assert isinstance(flags.get("system_metrics"), ast.Constant)
    assert flags["system_metrics"].value is True
