"""Fixtures of the listener tests: counters, a recording sink, started listeners."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.integration.collect.helpers import Collected, Started

from flowscope.metrics import Counters


@pytest.fixture
def counters() -> Counters:
    return Counters()


@pytest.fixture
def sink() -> Collected:
    return Collected()


@pytest.fixture
def start() -> Iterator[Started]:
    """``start(listener)`` starts it and returns it; every listener started is stopped at teardown."""
    started = Started()
    yield started
    started.stop_all()
