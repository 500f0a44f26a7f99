"""ONNX export of the embedding network, its parity check and a latency measurement."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import sys
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


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 17,
    size: int = 112,
    metadata: dict[str, str] | None = None,
) -> None:
    """Export ``model`` (eval mode) with a dynamic batch axis, atomically; the file carries
    :data:`CONTRACT` plus ``metadata`` and passes ``onnx.checker``."""
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
        _finish(tmp, metadata or {})


def to_float16(
    source: str | Path, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """The float16 variant of the float32 export ``source``, atomically: float16 weights and
    arithmetic behind the same float32 input and output (half the file; fast on GPUs, not on
    CPUs), by ONNX Runtime's converter (0.1 s; a second export of the network took 3 s).
    Check it with a cosine gate: its absolute error is not comparable to float32's.
    """
    import onnx

    path_before = list(sys.path)
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    finally:  # onnxruntime.transformers appends its own folder (flat scripts) to sys.path
        sys.path[:] = path_before
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    _sort_topologically(model.graph)  # the converter appends its input casts last
    with atomic_file(path) as tmp:
        onnx.save(model, str(tmp))
        _finish(tmp, {**(metadata or {}), "precision": "float16 weights and arithmetic"})


def _sort_topologically(graph: Any) -> None:
    """Reorder ``graph``'s nodes so that each comes after the producers of its inputs."""
    ready = {"", *(v.name for v in graph.input), *(t.name for t in graph.initializer)}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ExportError(f"float16 conversion left {waiting[0].name} without its inputs")
        pending = waiting
    copies = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


#: The input/output contract recorded in every exported model's metadata.
CONTRACT = {
    "input": "data: float32 NCHW (N, 3, 112, 112), RGB, (x / 255 - 0.5) / 0.5, 5-point aligned",
    "output": "embedding: float32 (N, D), raw (NOT L2-normalised); normalise before cosine",
    "flip_test": "not included: embed x and its horizontal flip and add the two, then normalise",
}


def _finish(path: Path, metadata: dict[str, str]) -> None:
    """Record the contract (and ``metadata``) in the model and run ``onnx.checker``."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in {**CONTRACT, **metadata}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: the exported model fails onnx.checker ({exc})") from None
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX model."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


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


def ort_session(path: str | Path) -> Any:
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
    min_cosine: float = 0.99999,
    real: np.ndarray | None = None,
    seed: int = 0,
    size: int = 112,
) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on ``batch`` random inputs plus the ``real`` ones
    (normalised NCHW crops, e.g. aligned faces); raise ExportError when the largest
    absolute difference exceeds ``atol`` or a cosine similarity falls below ``min_cosine``.

    Returns the max/mean absolute difference of the raw embeddings, the minimum cosine and
    how many inputs of each kind were compared.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(batch, 3, size, size)).astype(np.float32)
    n_real = 0 if real is None else len(real)
    if n_real:
        x = np.concatenate([x, np.asarray(real, np.float32)])
    expected = model.eval().float().cpu()(torch.from_numpy(x)).numpy()
    got = ort_session(path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
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
        "parity_real": float(n_real),
    }
    hint = "check unsupported ops in the export log, or the export.atol / min_cosine gates"
    if report["max_abs_diff"] > atol:
        raise ExportError(
            f"{path}: ONNX differs from PyTorch by {report['max_abs_diff']:.3g} > atol {atol}",
            hint=hint,
        )
    if report["min_cosine"] < min_cosine:
        raise ExportError(
            f"{path}: ONNX vs PyTorch cosine {report['min_cosine']:.7f} < {min_cosine}",
            hint=hint,
        )
    return report


def timed(fn, runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn()``, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _engine_speed(engine: str, fn, runs: int, batch: int, size: int) -> dict[str, float]:
    one = np.zeros((1, 3, size, size), dtype=np.float32)
    many = np.zeros((batch, 3, size, size), dtype=np.float32)
    ms = np.array(timed(lambda: fn(one), runs)) * 1000
    per_batch = np.median(timed(lambda: fn(many), max(3, runs // 4)))
    return {
        f"{engine}_latency_ms_median": float(np.median(ms)),
        f"{engine}_latency_ms_p90": float(np.percentile(ms, 90)),
        f"{engine}_images_per_s_b{batch}": float(batch / per_batch),
    }


def measure_onnx_speed(
    path: str | Path, *, runs: int = 20, batch: int = 64, size: int = 112
) -> dict[str, float]:
    """ONNX Runtime on the CPU: median/p90 latency of one image (ms) and throughput at
    ``batch`` (images/s, median of ``max(3, runs // 4)`` runs)."""
    session = ort_session(path)
    return _engine_speed(
        "onnx", lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x}), runs, batch, size
    )


@torch.inference_mode()
def measure_speed(
    model: nn.Module,
    path: str | Path,
    *,
    runs: int = 20,
    batch: int = 64,
    size: int = 112,
) -> dict[str, float]:
    """:func:`measure_onnx_speed`, and the same for PyTorch eager on the CPU."""
    model = model.eval().float().cpu()
    return {
        **measure_onnx_speed(path, runs=runs, batch=batch, size=size),
        **_engine_speed("torch", lambda x: model(torch.from_numpy(x)), runs, batch, size),
    }
