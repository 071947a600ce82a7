"""The Simulation service, and :class:`Simulation`, the extension that brings it to an agent's server.

``vkec2.agent.v1.Simulation`` forces behaviour from outside (SetApplicationState,
ClearApplicationState, GetSimulationState, SetRandomStatus) on an instance whose runtime is a
:class:`agent.sim.control.ControlledRuntime`. :class:`Simulation` is the
:class:`agent.service.Extension` both the simulator and ``vkec2 agent --enable-simulation`` hand to
:func:`agent.service.make_server`: it registers this service next to the lifecycle and puts the
fault-injecting interceptor (:class:`agent.sim.faults.FaultInjector`) in front of every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from agent.host import Host, Instance
from agent.sim.control import NOTHING_FORCED, ControlledRuntime, Forced
from agent.sim.faults import FaultInjector, Partition
from agent.sim.runtime import SimRuntime
from agent.v1 import simulation_pb2_grpc as _simulation_grpc

# The generated gRPC module is untyped: use it through Any.
simulation_pb2_grpc: Any = _simulation_grpc

SIMULATION_SERVICE = "vkec2.agent.v1.Simulation"


#: The Spot notices a simulation may force (empty: none).
SPOT_NOTICES = ("", "terminate", "stop", "hibernate", "rebalance")


class SimulationServicer(simulation_pb2_grpc.SimulationServicer):  # type: ignore[misc,unused-ignore]
    """Sets and reads the forced state of the instance the call names."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def _control(self, context: grpc.ServicerContext) -> ControlledRuntime:
        inst: Instance = self._host.resolve(context)
        if not isinstance(inst.runtime, ControlledRuntime):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "simulation is not enabled on this agent")
        assert isinstance(inst.runtime, ControlledRuntime)
        return inst.runtime

    def SetApplicationState(self, request: Any, context: grpc.ServicerContext) -> Any:
        control = self._control(context)
        if request.spot_notice not in SPOT_NOTICES:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"spot_notice must be empty or one of {', '.join(SPOT_NOTICES[1:])}: {request.spot_notice!r}",
            )
        control.force(
            Forced(
                request.state,
                request.delay_ms,
                request.no_answer,
                request.reason,
                request.message,
                request.exit_code,
                request.spot_notice,
            )
        )
        return control.state_pb()

    def ClearApplicationState(self, request: Any, context: grpc.ServicerContext) -> Any:
        control = self._control(context)
        control.force(NOTHING_FORCED)
        return control.state_pb()

    def GetSimulationState(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._control(context).state_pb()

    def SetRandomStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        control = self._control(context)
        if not isinstance(control.inner, SimRuntime):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "random statuses need the simulated runtime (--runtime sim)",
            )
        assert isinstance(control.inner, SimRuntime)
        control.inner.set_random(request.enabled, request.seed)
        return control.state_pb()


class Simulation:
    """The :class:`agent.service.Extension` of a simulating server: the service and its faults."""

    def __init__(self, partition: Partition | None = None) -> None:
        self.partition = partition

    def interceptors(self, host: Host) -> Sequence[grpc.ServerInterceptor]:
        return [FaultInjector(host, self.partition)]

    def add_services(self, server: grpc.Server, host: Host) -> set[str]:
        simulation_pb2_grpc.add_SimulationServicer_to_server(SimulationServicer(host), server)
        return {SIMULATION_SERVICE}
