"""The fast lane: pure modules only, with no PostgreSQL and no Redis (``make test-fast``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    """Nothing here touches Redis, so there is nothing to flush (and none may be running)."""


@pytest.fixture(autouse=True)
def _no_cached_banner():
    """No cache here either (tests/conftest.py clears the kill-switch banner's entry for the other lanes)."""
