"""Training checkpoints: the complete state of a run, written atomically, one file per rank.

A checkpoint holds what an exact resume needs: backbone, head (a rank's shard of the class
centres for Partial FC), optimizer, lr scheduler, GradScaler, the RNG states and the number of
finished steps (the sampler needs nothing else, see :mod:`arcflow.train.sampling`), plus a
fingerprint of the run's settings and data: a checkpoint of another run is never resumed.

Everything in it is tensors and plain data (the RNG states too), so it is read back with
``torch.load(weights_only=True)``: a planted or tampered file is refused, never executed.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arcflow.atomic import atomic_file
from arcflow.errors import TrainingError, first_line


def rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank{rank:03d}.pt"


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain data (loadable with ``weights_only``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, rank: int, state: dict[str, Any]) -> None:
    """Write this rank's state atomically (the previous checkpoint stays until it is whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(rank_file(folder, rank)) as tmp:
        torch.save({**state, "rng": rng_state()}, tmp)


def load(folder: Path, rank: int, fingerprint: str) -> dict[str, Any] | None:
    """This rank's checkpoint if one exists for this very run (same fingerprint), else None."""
    path = rank_file(folder, rank)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            f"{path}: not a tensors-only checkpoint, refused without running it",
            hint="a file ArcFlow did not write (or an older one): delete it to start over",
        ) from None
    except Exception as exc:  # a torn or foreign file: name it, do not guess
        raise TrainingError(
            f"{path}: unreadable checkpoint ({first_line(exc)})", hint="delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        return None
    return state
