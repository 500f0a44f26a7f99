"""Which dataset the aligned evaluation sets come from: ``dataset.json`` beside them.

The align stage writes it (from the release's ``meta.json`` when the release has one, as
SynthFace does, else from the source folder's name); the evaluate report opens with it, so
numbers from the embedded synthetic data are never read as a real benchmark's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from arcflow.atomic import write_json
from arcflow.errors import DataFormatError

LABEL_FILE = "dataset.json"
SYNTHETIC = frozenset({"synthface"})
_MAX_META_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def dataset_label(raw: Path) -> dict[str, object]:
    """``{"dataset", "source", "synthetic"}`` for the release folder ``raw``."""
    name = raw.name
    meta = raw / "meta.json"
    if meta.is_file() and meta.stat().st_size <= _MAX_META_BYTES:
        try:
            said = json.loads(meta.read_text(encoding="utf-8")).get("dataset")
        except (ValueError, AttributeError):
            said = None  # not ours to judge here: the label falls back to the folder's name
        if isinstance(said, str) and _NAME.fullmatch(said):
            name = said
    return {"dataset": name, "source": raw.name, "synthetic": name in SYNTHETIC}


def write_dataset_label(raw: Path, eval_dir: Path) -> None:
    """Write :func:`dataset_label` of ``raw`` into ``eval_dir``."""
    write_json(eval_dir / LABEL_FILE, dataset_label(raw))


def read_dataset_label(eval_dir: Path) -> dict[str, object] | None:
    """The label in ``eval_dir`` (None when there is none: sets aligned before labels)."""
    path = eval_dir / LABEL_FILE
    if not path.is_file():
        return None
    try:
        label = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not JSON ({exc})") from None
    if not isinstance(label, dict) or not isinstance(label.get("dataset"), str):
        raise DataFormatError(f"{path}: expected an object with a 'dataset' name")
    return label
