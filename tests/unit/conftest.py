"""Fixtures shared by unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def gateways():
    """Collects gateways a test starts (tests/gateway_client.py) and stops them after it."""
    started = []
    yield started
    for gw in started:
        gw.stop()
