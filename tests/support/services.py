"""The test suite's view of local processes; it all lives in :mod:`vkec2.procs`, shared with ``vkec2 up``."""

from vkec2.procs import (
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
