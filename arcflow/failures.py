"""Expected failures as one ``error:`` line and one ``hint:`` line, for every entry point.

Stages (``python -m stages.*``), the ``arcflow`` CLI and the flows' command lines share
:func:`one_line_errors`. What counts as expected: our own :class:`ArcFlowError`, the MLflow
server's errors, and what the machine says about files (missing, permission, disk full, out
of memory). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator

from arcflow.errors import ArcFlowError, first_line

INTERRUPTED_EXIT = 130
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def explain(exc: BaseException, *, missing_hint: str = "") -> tuple[str, str] | None:
    """``(error, hint)`` for an expected failure, or None for a bug."""
    if isinstance(exc, ArcFlowError):
        return str(exc), exc.hint
    if isinstance(exc, MemoryError):
        return (
            "out of memory",
            "lower the batch size (train.batch_size, evaluate.batch_size) or the data budgets "
            "(docs/security.md); other jobs on this machine may hold memory too",
        )
    if _is_mlflow_error(exc):
        return f"MLflow: {first_line(exc)}", "is the tracking server up? (MLFLOW_TRACKING_URI)"
    if isinstance(exc, OSError) and exc.filename is not None:
        return _file_failure(exc, missing_hint)
    return None


def _file_failure(exc: OSError, missing_hint: str) -> tuple[str, str]:
    name = exc.filename
    if isinstance(exc, FileNotFoundError):
        return f"{name}: no such file or directory", missing_hint or "check the path"
    if isinstance(exc, PermissionError):
        return f"{name}: permission denied", "check the file's owner and mode"
    if exc.errno in _DISK_FULL:
        return f"no space left on the device writing {name}", "free disk space and rerun"
    return f"{name}: {exc.strerror or first_line(exc)}", ""


def _is_mlflow_error(exc: BaseException) -> bool:
    """MLflow's exceptions, recognised without importing mlflow (slow) for the check."""
    return any(
        cls.__module__.startswith("mlflow.") and cls.__name__ == "MlflowException"
        for cls in type(exc).__mro__
    )


@contextlib.contextmanager
def one_line_errors(*, missing_hint: str = "") -> Iterator[None]:
    """Run the block; an expected failure prints ``error:``/``hint:`` and exits 1 (Ctrl-C:
    ``interrupted``, 130). ``missing_hint`` is the hint for a missing file."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except Exception as exc:  # explain() decides; a bug is re-raised with its traceback
        said = explain(exc, missing_hint=missing_hint)
        if said is None:
            raise
        error, hint = said
        print(f"error: {error}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        sys.exit(1)
