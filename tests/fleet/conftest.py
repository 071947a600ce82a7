"""Fixtures for end-to-end fleet tests: a harness per test, with an EC2 proxy that counts calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness


@pytest.fixture
def ec2_proxy(moto_url: str) -> Iterator[Ec2Proxy]:
    proxy = Ec2Proxy(moto_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def make_fleet(
    tmp_path: Path, redis_url: str, ec2_proxy: Ec2Proxy, agent_sim: str
) -> Iterator[Callable[..., FleetHarness]]:
    """Build a fleet (config + harness) whose EC2 endpoint is the counting proxy in front of moto."""
    made: list[FleetHarness] = []

    def build(**overrides: Any) -> FleetHarness:
        harness = FleetHarness(tmp_path, redis_url, ec2_proxy.url, agent_sim, overrides)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.stop()
