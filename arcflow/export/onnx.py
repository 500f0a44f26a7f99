"""ONNX export of the embedding network, its parity check and a latency measurement."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from arcflow.atomic import atomic_file
from arcflow.errors import ExportError

INPUT_NAME = "data"
OUTPUT_NAME = "embedding"


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = 17, size: int = 112) -> None:
    """Export ``model`` (eval mode, float32) with a dynamic batch axis, atomically."""
    model = model.eval().float().cpu()
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with atomic_file(path) as tmp, contextlib.redirect_stdout(io.StringIO()), _quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's optimiser chatter (INFO logs of onnxscript / onnx_ir)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def _session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def check_parity(
    model: nn.Module,
    path: str | Path,
    *,
    batch: int = 8,
    atol: float = 1e-4,
    seed: int = 0,
    size: int = 112,
) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on random crops; raise ExportError beyond ``atol``.

    Returns max/mean absolute difference of the raw embeddings and the minimum cosine
    similarity between the two.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(batch, 3, size, size)).astype(np.float32)
    expected = model.eval().float().cpu()(torch.from_numpy(x)).numpy()
    got = _session(path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if got.shape != expected.shape:
        raise ExportError(f"{path}: ONNX output shape {got.shape} != PyTorch {expected.shape}")
    diff = np.abs(got - expected)
    cos = np.sum(got * expected, 1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1) + 1e-12
    )
    report = {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "min_cosine": float(cos.min()),
        "parity_batch": float(batch),
    }
    if report["max_abs_diff"] > atol:
        raise ExportError(
            f"{path}: ONNX differs from PyTorch by {report['max_abs_diff']:.3g} > atol {atol}",
            hint="check unsupported ops in the export log or raise export.atol",
        )
    return report


def measure_latency(path: str | Path, *, runs: int = 20, size: int = 112) -> dict[str, float]:
    """Median and p90 latency (ms) of one 1-image inference in ONNX Runtime on the CPU."""
    session = _session(path)
    x = np.zeros((1, 3, size, size), dtype=np.float32)
    session.run([OUTPUT_NAME], {INPUT_NAME: x})  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append((time.perf_counter() - start) * 1000)
    return {
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p90": float(np.percentile(times, 90)),
    }
