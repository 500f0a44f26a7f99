"""torch.distributed for training: the process group from torchrun's environment, and the
launch of ``nproc`` local processes through torchrun itself.

A stage calls :func:`relaunch_under_torchrun` first: when ``train.devices`` asks for more
than one process and the stage is not yet running under torchrun, it re-executes itself as
``python -m torch.distributed.run --standalone --nproc-per-node N -m stages.train …`` and
returns torchrun's exit code. Under torchrun (``WORLD_SIZE`` set) :func:`init` joins the group:
NCCL with one GPU per process, gloo on CPU. Multi-node runs start the stage with torchrun
directly (``--nnodes``, ``--rdzv-endpoint``); see docs/training.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """This process's place: global rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def resolve_devices(devices: int | str, device: str) -> int:
    """How many local processes ``train.devices`` means: ``auto`` = every visible GPU (1 on CPU)."""
    if devices == "auto":
        return torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 1
    return int(devices)


def relaunch_under_torchrun(nproc: int, module: str, argv: list[str]) -> int | None:
    """Run ``python -m module argv`` in ``nproc`` processes under torchrun; None if not needed."""
    if nproc <= 1 or under_torchrun():
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", module, *argv]
    return subprocess.run(cmd, check=False).returncode


def init(device: str) -> DistContext:
    """Join torchrun's process group (or stay single-process) and pick this rank's device."""
    from arcflow.devices import resolve_device

    if not under_torchrun():
        return DistContext(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
        threads = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        torch.set_num_threads(threads)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return DistContext(rank, world, local_rank, chosen)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
