"""Shared by the large-benchmark scoring tests (top-k, MegaFace, Trillion-Pairs).

A test module takes the fixtures by binding them under their own names (pytest finds fixtures
among a module's attributes)::

    from tests.unit import eval_fixtures

    one_thread = eval_fixtures.one_thread
    device = eval_fixtures.device

and parametrises ``device`` indirectly over :data:`DEVICES`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from arcflow.evaluate import topk

H = 0.5

DEVICES = [
    "cpu",
    "cpu-torch",  # the CPU with torch doing what NumPy does there: the CUDA code path
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread (OpenMP's waits on a busy machine would dwarf the work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The device of a :data:`DEVICES` parameter ("cpu-torch" runs on "cpu")."""
    if request.param == "cpu-torch":
        monkeypatch.setattr(topk, "on_host", lambda x: False)
        return "cpu"
    return request.param


def cell24() -> np.ndarray:
    """The 24 vertices of the 24-cell (4-d unit vectors): every dot product between them is
    -1, -1/2, 0, 1/2 or 1, exact in float32 whatever the summation order, so scores tie often."""
    halves = list(itertools.product([-H, H], repeat=4))
    axes = [s * np.eye(4)[i] for i in range(4) for s in (1, -1)]
    return np.array(halves + axes, np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` with every row L2-normalised, as float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
