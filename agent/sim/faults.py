"""Fault injection: a gRPC server interceptor that makes an agent answer as its forced state says.

With a state forced through the Simulation service (:mod:`agent.sim.service`), every
ApplicationLifecycle call and every grpc.health call about that instance is held until the
caller's deadline (``no_answer``: DEADLINE_EXCEEDED), delayed by ``delay_ms``, or, for
NOT_SERVING, refused with UNAVAILABLE (lifecycle) or answered NOT_SERVING (health). Which instance a
call is about is the host's answer, asked first, so a call for the wrong or an unknown instance is
refused exactly as without simulation. Bootstrap and Simulation calls are never touched: a
simulation can always be cleared. What the agent *reports* under a forced phase is the
:class:`agent.sim.control.ControlledRuntime`'s part.

A :class:`Partition` cuts every simulated agent off at once, as a network partition between the
workers and all agents would, controlled from outside by a file (``vkec2 agent-sim
--partition-file PATH``): while PATH exists every lifecycle and grpc.health call is refused with
UNAVAILABLE, or, when the file holds ``hang``, held until the caller's deadline; removing the file
ends the partition. Simulation calls still pass, so a test can seed and clear states meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2

from agent.host import Host, Instance
from agent.service import LIFECYCLE_SERVICE, watch_health
from agent.sim.control import ControlledRuntime
from agent.v1 import simulation_pb2

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
NOT_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)

if TYPE_CHECKING:  # generic in the type stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]


def _hang(context: grpc.ServicerContext) -> None:
    """Simulated 'no answer': hold the call until the caller gives up (its deadline or a cancel)."""
    done = threading.Event()
    context.add_callback(done.set)
    remaining = context.time_remaining()
    done.wait(3600 if remaining is None else remaining + 1.0)
    context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "simulated: the agent never answered")


def serving(inst: Instance | None, context: grpc.ServicerContext) -> bool:
    """Apply the instance's forced faults to this call; False means 'report NOT_SERVING'."""
    control = inst.runtime if inst is not None else None
    if not isinstance(control, ControlledRuntime):
        return True
    f = control.forced
    if f.no_answer:
        _hang(context)
    if f.delay_ms:
        threading.Event().wait(f.delay_ms / 1000.0)
    return f.state != simulation_pb2.FORCED_STATE_NOT_SERVING


@dataclass(frozen=True)
class Partition:
    """A partition switched by the file at ``path``: absent, none; present, refuse (or ``hang``)."""

    path: str | None = None

    def apply(self, context: grpc.ServicerContext) -> None:
        """Refuse or hold this call while the partition is on; return at once otherwise."""
        if not self.path or not os.path.exists(self.path):
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                mode = f.read().strip()
        except OSError:  # removed meanwhile: the partition just ended
            return
        if mode == "hang":
            _hang(context)
        context.abort(grpc.StatusCode.UNAVAILABLE, "simulated: network partition between caller and agent")


class FaultInjector(grpc.ServerInterceptor):
    """Wraps the lifecycle and health handlers of a server of ``host`` with the forced faults."""

    def __init__(self, host: Host, partition: Partition | None = None) -> None:
        self._host = host
        self._partition = partition or Partition()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None
        if method.startswith(f"/{LIFECYCLE_SERVICE}/"):
            return self._lifecycle(handler)
        if method == HEALTH_CHECK and handler.unary_unary is not None:
            check = handler.unary_unary
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: self._health(check(request, context), context),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if method == HEALTH_WATCH and handler.unary_stream is not None:
            watch = handler.unary_stream

            def faulty_watch(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                truthful = watch(request, context)
                # The first answer checks the request and its target; a truthful agent that
                # answers at all is SERVING, so the rest of the stream is the faults' to decide.
                answer = next(truthful)
                truthful.close()  # type: ignore[attr-defined]
                yield from watch_health(lambda r, c: self._health(answer, c), self._host, request, context)

            return grpc.unary_stream_rpc_method_handler(
                faulty_watch, handler.request_deserializer, handler.response_serializer
            )
        return handler

    def _health(self, answer: Any, context: grpc.ServicerContext) -> Any:
        self._partition.apply(context)
        return answer if serving(self._host.health_target(context), context) else NOT_SERVING

    def _enter(self, context: grpc.ServicerContext) -> None:
        self._partition.apply(context)
        if not serving(self._host.resolve(context), context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "simulated: the agent is not serving")

    def _lifecycle(self, handler: Handler) -> Handler:
        enter = self._enter
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def unary_call(request: Any, context: grpc.ServicerContext) -> Any:
                enter(context)
                return unary(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_call, des, ser)
        if handler.unary_stream is not None:
            server_stream = handler.unary_stream

            def server_streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                enter(context)
                yield from server_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(server_streaming, des, ser)
        if handler.stream_stream is not None:
            bidi = handler.stream_stream

            def bidi_streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                enter(context)
                yield from bidi(requests, context)

            return grpc.stream_stream_rpc_method_handler(bidi_streaming, des, ser)
        return handler
