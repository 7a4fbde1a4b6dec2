"""Fixtures for tests that run the flows as Prefect runs them."""

from __future__ import annotations

import pytest

from zuora.sandbox.server import RunningSandbox
from zuora_sync.settings import get_settings


@pytest.fixture
def flow_environment(pg_url: str, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow reads its settings from the process environment: point it at this test's
    database and tenant."""
    for name, value in {**sandbox.env(), "DATABASE_URL": pg_url}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
