"""Fixtures of the fleet's unit tests: a fresh :class:`~tests.unit.fleet.world.World` per test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.fleet.world import World, settings


@pytest.fixture
def world() -> World:
    return World(settings())


@pytest.fixture
def make_world() -> Callable[..., World]:
    """A world with settings overrides (``make_world(max_attempts=1)``); none has warm pools."""
    return lambda **overrides: World(settings(**overrides))
