"""Fixtures of the web tests: a ``World`` (see ``world.py``) with two closed seconds of traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tests.unit.serve.world import T0, World, second_0, second_1


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Two seconds of traffic, both closed (final); the minute and the hour still open."""
    built = World(tmp_path)
    built.feed(second_0())
    built.at(T0 + 1_100)
    built.feed(second_1())
    built.at(T0 + 3_000)
    yield built
    built.close()


@pytest.fixture
def empty_world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path)
    yield built
    built.close()


@pytest.fixture
def client(world: World) -> TestClient:
    return world.client
