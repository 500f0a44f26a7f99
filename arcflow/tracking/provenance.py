"""Where a model came from: the git commit, a hash of its params, the DVC version of its data."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

UNKNOWN = "unknown"


def git_commit(root: Path | None = None) -> str:
    """``git rev-parse HEAD`` in ``root``, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    return out.stdout.strip() or UNKNOWN


def params_hash(raw: Mapping[str, Any], sections: Iterable[str]) -> str:
    """sha256 of the named params sections as canonical JSON (comments and order don't count)."""
    chosen = {name: raw.get(name) for name in sorted(sections)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()


def data_versions(lock: Path, stage: str = "train", prefix: str = "data/") -> dict[str, str]:
    """path -> DVC md5 of ``stage``'s data dependencies, as recorded in ``dvc.lock``.

    DVC writes a stage's lock entry when the stage finishes, so during ``dvc repro`` the entry
    of an upstream stage (train, for export) is already there. Empty if there is none.
    """
    try:
        entry = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    deps = entry.get("deps", []) if isinstance(entry, dict) else []
    return {
        str(dep["path"]): str(dep["md5"])
        for dep in deps
        if isinstance(dep, dict) and str(dep.get("path", "")).startswith(prefix) and "md5" in dep
    }


def data_version(versions: Mapping[str, str]) -> str:
    """One short id for a set of DVC data versions ("unknown" when there are none)."""
    if not versions:
        return UNKNOWN
    joined = json.dumps(dict(sorted(versions.items())))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]
