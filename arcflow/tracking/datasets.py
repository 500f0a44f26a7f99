"""The data a run used, as MLflow dataset inputs identified by their DVC version.

A DVC-tracked folder (``data/aligned/train``) becomes a metadata-only MLflow dataset: its name
is the path, its digest the md5 DVC recorded for it in ``dvc.lock`` (``<md5>.dir``), its source
the folder in the DVC repository; the input's tags name the stage that wrote it. The run's
"Datasets used" then answer "which data version?" with what ``dvc checkout`` restores.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from arcflow.tracking.provenance import DvcOutput, dvc_output
from arcflow.tracking.run import store_root

TRAINING = "training"
EVALUATION = "evaluation"


def repository_path(path: Path, lock: Path) -> str | None:
    """``path`` relative to the repository of ``lock`` (POSIX), or None if outside it.

    Links are not followed: DVC names an output by where it sits in the repository.
    """
    relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(lock.parent)))
    return None if relative.parts[:1] == ("..",) else relative.as_posix()


def dvc_dataset(path: Path, lock: Path = Path("dvc.lock")) -> tuple[Any, DvcOutput] | None:
    """An MLflow dataset for the DVC output ``path`` with its ``dvc.lock`` md5 as the digest;
    None when ``dvc.lock`` has no record of it (a stage run outside DVC)."""
    relative = repository_path(path, lock)
    record = dvc_output(lock, relative) if relative is not None else None
    if record is None:
        return None
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow registers its local source twice ("", "file")
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        source = resolve_dataset_source(str(store_root(lock.absolute().parent) / record.path))
    return MetaDataset(source, name=record.path, digest=record.md5), record


def log_dvc_input(path: Path, context: str, lock: Path = Path("dvc.lock")) -> Any | None:
    """Log the DVC output ``path`` as an input of the active run (``context``: training,
    evaluation); returns the MLflow dataset, or None when DVC has no record of the path."""
    import mlflow

    found = dvc_dataset(path, lock)
    if found is None:
        return None
    dataset, record = found
    tags = {"dvc.path": record.path, "dvc.stage": record.stage, "dvc.md5": record.md5}
    mlflow.log_input(dataset, context=context, tags=tags)
    return dataset
