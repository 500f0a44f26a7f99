"""One exception hierarchy for ArcFlow.

Stages catch :class:`ArcFlowError` at the top and print one clear line plus a hint;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ArcFlowError(Exception):
    """Base class of every expected, user-facing failure."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class ConfigError(ArcFlowError):
    """params.yaml (or a preset) is missing a section, has a bad key, type or value."""

    hint = "fix params.yaml; its comments list every key and its allowed values"


class DataFormatError(ArcFlowError):
    """A data file is corrupt or not in the format it claims (names the file and position)."""


class UnsafePickleError(DataFormatError):
    """A pickle asked to load a type the format does not need; nothing was executed."""


class SourceError(ArcFlowError):
    """A dataset source could not be fetched or verified."""


class TrainingError(ArcFlowError):
    """Training cannot continue (e.g. the loss became NaN)."""


class ExportError(ArcFlowError):
    """The exported model is missing or disagrees with PyTorch."""


class TrackingError(ArcFlowError):
    """MLflow could not be reached or the run referenced by the pipeline is gone."""


class RegistryError(ArcFlowError):
    """A promotion or rollback cannot be carried out (no candidate metrics, lock held, ...)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (its type name when empty), for one-line errors
    wrapping a library's exception."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
