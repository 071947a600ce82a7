"""Fixtures for end-to-end fleet tests: a harness per test, behind the EC2 double (a counting proxy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.awslike import AwsLike
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, fleet_behind


@pytest.fixture
def ec2_proxy(moto_url: str) -> Iterator[Ec2Proxy]:
    proxy = Ec2Proxy(moto_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def make_fleet(
    tmp_path: Path, redis_url: str, ec2_proxy: Ec2Proxy, agent_sim: str
) -> Iterator[Callable[..., FleetHarness]]:
    """Build a fleet (config + harness) whose EC2 endpoint is the counting proxy in front of moto.

    ``aws_like=True`` (or an :class:`AwsLike`) makes that proxy behave like AWS for the test (opt-in).
    """
    made: list[FleetHarness] = []

    def build(*, aws_like: AwsLike | bool = False, **overrides: Any) -> FleetHarness:
        harness = fleet_behind(ec2_proxy, tmp_path, redis_url, agent_sim, overrides, aws_like=aws_like)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.stop()
