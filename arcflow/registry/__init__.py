"""The MLflow model registry: champion/challenger promotion with gates, rollback, audit log."""

from arcflow.registry.promotion import Outcome, Rollback, promote, rollback
from arcflow.registry.store import CHALLENGER, CHAMPION, PREVIOUS, audit_log

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "Outcome",
    "Rollback",
    "audit_log",
    "promote",
    "rollback",
]
