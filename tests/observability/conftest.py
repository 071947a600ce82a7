"""Fixtures for the observability tests: the fleet harness of the end-to-end fleet tests, reused."""

from __future__ import annotations

from tests.fleet.conftest import ec2_proxy, make_fleet

__all__ = ["ec2_proxy", "make_fleet"]
