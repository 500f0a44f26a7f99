"""Fixtures of the integration tests: the real servers they talk to."""

from __future__ import annotations

import pytest

from infra.local.stack import Stack


@pytest.fixture(scope="session")
def mlflow_server(local_stack: Stack) -> str:
    """The local stack's `mlflow server` (SQLite backend, artifacts proxied to the S3
    endpoint); its URI."""
    return local_stack.mlflow_url
