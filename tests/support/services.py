"""The test suite's view of local processes: all of it lives in :mod:`vkec2.cli.procs`, as for `vkec2 up`."""

from vkec2.cli.procs import (
    ManagedProcess,
    free_port,
    port_open,
    start_agent_sim,
    start_moto,
    start_redis,
    wait_until,
)

__all__ = [
    "ManagedProcess",
    "free_port",
    "port_open",
    "start_agent_sim",
    "start_moto",
    "start_redis",
    "wait_until",
]
