"""Shared by the large-benchmark scoring benches (``megaface_rank1``, ``trillion_pairs``).

Each of them runs every configuration in a fresh subprocess (``--one ...``), so that a
configuration's peak memory is its own: :func:`run_fresh` starts one, :func:`measure` times it
in the child. Imported as ``bench._common`` (``PYTHONPATH=.``, as the benches run); the heavy
imports are made inside the functions, so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def probe_features(rng, ids, identities: int, dim: int):
    """Unit features of probes labelled ``ids``: a random centre per identity (drawn first)
    plus 1.7 x standard normal noise, L2-normalised, float32."""
    import numpy as np

    centres = rng.standard_normal((identities, dim))
    feats = centres[ids] + 1.7 * rng.standard_normal((len(ids), dim))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)


def measure(run: Callable[[], T], device: str) -> tuple[T, dict[str, float]]:
    """``run()``'s result, and its ``seconds`` (CUDA synchronised) and ``peak_gib`` (the peak
    memory in GiB: ``max_memory_allocated`` on CUDA, else this process's peak RSS)."""
    import torch

    start = time.perf_counter()
    result = run()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result, {"seconds": seconds, "peak_gib": peak}


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A bench's argument parser (``doc`` its help), with the options they all take: the
    features' ``--dim``, the ``--device`` to score on and the data's ``--seed``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p


def machine(device: str) -> str:
    """The first words of a report: CPU, cores, Python and the device."""
    from arcflow.devices import cpu_model

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"device {device}"
    )


def run_fresh(
    script: str, one: Sequence[str], args: argparse.Namespace, flags: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """``script --one <one...>`` in a fresh Python, passed ``args``' values of ``flags``."""
    cmd = [sys.executable, script, "--one", *one]
    for flag in flags:
        cmd += [f"--{flag}", str(getattr(args, flag.replace("-", "_")))]
    return subprocess.run(cmd, capture_output=True, text=True)


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    """The JSON object a ``--one`` child printed last."""
    return json.loads(proc.stdout.strip().splitlines()[-1])
