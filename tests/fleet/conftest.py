"""Fixtures for end-to-end fleet tests: a harness per test, behind the EC2 double (a counting proxy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.awslike import E2E_DEFAULT, AwsLike
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

    The proxy behaves like AWS by default (:data:`E2E_DEFAULT`: lag, throttling, slow transitions);
    ``aws_like=True`` is the full :data:`AWS_LIKE` preset, an :class:`AwsLike` a test's own, and
    ``aws_like=False`` moto's behaviour (for a test that needs it, saying why).
    """
    made: list[FleetHarness] = []

    def build(*, aws_like: AwsLike | bool = E2E_DEFAULT, **overrides: Any) -> FleetHarness:
        harness = fleet_behind(ec2_proxy, tmp_path, redis_url, agent_sim, overrides, aws_like=aws_like)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.stop()
