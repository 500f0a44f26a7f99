"""Where a model came from: the git commit (and whether the tree differed from it), a hash of
its params, the DVC version of its data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

UNKNOWN = "unknown"
LOCK = "dvc.lock"
MAX_TAG_LENGTH = 5000  # MLflow allows 8000 characters in a tag value
DVC_EXPERIMENT_ENV = {  # set by DVC for the stages of an experiment (dvc/env.py)
    "DVC_EXP_NAME": "dvc.exp_name",
    "DVC_EXP_BASELINE_REV": "dvc.exp_baseline_rev",
}


def _git(root: Path | None, *args: str) -> str | None:
    """``git ARGS`` in ``root``: its stdout, or None outside a git checkout (or without git)."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


def git_commit(root: Path | None = None) -> str:
    """``git rev-parse HEAD`` in ``root``, or "unknown" outside a git checkout."""
    return (_git(root, "rev-parse", "HEAD") or "").strip() or UNKNOWN


@dataclass(frozen=True)
class GitState:
    """The commit a stage ran on and the tracked files that differed from it."""

    commit: str
    dirty: bool | None  # None: not a git checkout
    modified: tuple[str, ...] = ()  # repository-relative, sorted

    def tags(self) -> dict[str, str]:
        """MLflow tags: ``arcflow.git_sha``, ``git.dirty`` (true | false | unknown) and, when
        dirty, ``git.modified_count`` and ``git.modified`` (the paths, comma-separated)."""
        tags = {
            "arcflow.git_sha": self.commit,
            "git.dirty": UNKNOWN if self.dirty is None else str(self.dirty).lower(),
        }
        if self.modified:
            listed = ", ".join(self.modified)
            if len(listed) > MAX_TAG_LENGTH:
                listed = listed[: MAX_TAG_LENGTH - 20].rsplit(", ", 1)[0] + ", …"
            tags |= {"git.modified_count": str(len(self.modified)), "git.modified": listed}
        return tags


def git_state(root: Path | None = None, lock: Path | None = None) -> GitState:
    """The commit and the tracked files modified, staged, deleted or renamed since it.

    What the pipeline itself writes does not count: ``dvc.lock`` and the outputs it records
    (metrics and plots kept in git change as stages finish). Untracked files do not count.
    """
    commit = git_commit(root)
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    prefix = _git(root, "rev-parse", "--show-prefix")
    if status is None or prefix is None or commit == UNKNOWN:
        return GitState(commit, None)
    lock = lock if lock is not None else (root or Path()) / LOCK
    generated = {prefix.strip() + path for path in (LOCK, *pipeline_outputs(lock))}
    entries = iter(status.split("\0"))
    modified: set[str] = set()
    for entry in entries:
        if len(entry) < 4:
            continue
        path = entry[3:]
        if entry[0] in "RC":
            next(entries, None)  # a rename's or copy's source path follows
        if not any(path == out or path.startswith(out.rstrip("/") + "/") for out in generated):
            modified.add(path)
    return GitState(commit, bool(modified), tuple(sorted(modified)))


def dvc_experiment_tags() -> dict[str, str]:
    """``dvc.exp_name`` and ``dvc.exp_baseline_rev`` when DVC runs the stage as an experiment."""
    return {tag: os.environ[env] for env, tag in DVC_EXPERIMENT_ENV.items() if os.environ.get(env)}


def _lock_stages(lock: Path) -> dict[str, Any]:
    """``dvc.lock``'s stages (empty when it is missing or unreadable)."""
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return stages if isinstance(stages, dict) else {}


def _entries(entry: Any, key: str) -> list[dict[str, Any]]:
    items = entry.get(key, []) if isinstance(entry, dict) else []
    return [item for item in items if isinstance(item, dict) and "path" in item]


def pipeline_outputs(lock: Path) -> list[str]:
    """Every output path ``dvc.lock`` records (relative to the repository)."""
    stages = _lock_stages(lock).values()
    return [str(out["path"]) for entry in stages for out in _entries(entry, "outs")]


@dataclass(frozen=True)
class DvcOutput:
    """A path as DVC recorded it: the stage that writes it and its md5 (``….dir`` for a folder)."""

    path: str
    stage: str
    md5: str


def dvc_output(lock: Path, path: str) -> DvcOutput | None:
    """The ``dvc.lock`` record of the output ``path`` (relative to the repository), if any.

    During ``dvc repro`` the producer's entry is the current one: DVC writes a stage's entry
    as soon as it finishes, before the stages after it start.
    """
    wanted = Path(path).as_posix().rstrip("/")
    for stage, entry in _lock_stages(lock).items():
        for out in _entries(entry, "outs"):
            if str(out["path"]).rstrip("/") == wanted and "md5" in out:
                return DvcOutput(wanted, str(stage), str(out["md5"]))
    return None


def params_hash(raw: Mapping[str, Any], sections: Iterable[str]) -> str:
    """sha256 of the named params sections as canonical JSON (comments and order don't count)."""
    chosen = {name: raw.get(name) for name in sorted(sections)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()


def data_versions(lock: Path, stage: str = "train", prefix: str = "data/") -> dict[str, str]:
    """path -> DVC md5 of ``stage``'s data dependencies, as recorded in ``dvc.lock``.

    DVC writes a stage's lock entry when the stage finishes, so during ``dvc repro`` the entry
    of an upstream stage (train, for export) is already there. Empty if there is none.
    """
    deps = _entries(_lock_stages(lock).get(stage), "deps")
    return {
        str(dep["path"]): str(dep["md5"])
        for dep in deps
        if str(dep["path"]).startswith(prefix) and "md5" in dep
    }


def data_version(versions: Mapping[str, str]) -> str:
    """One short id for a set of DVC data versions ("unknown" when there are none)."""
    if not versions:
        return UNKNOWN
    joined = json.dumps(dict(sorted(versions.items())))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]
