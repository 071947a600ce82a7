"""The faults the chaos suite injects, and the ledger of what it injected.

:class:`Partition` is a loopback TCP forwarder between the workers and the agent simulator (the
fleet's ``agent.endpoint`` is ``static:`` its address): healed, it copies bytes both ways; cut, it
keeps every connection open and silently drops what either side sends, and accepts new connections
that then hear nothing — what a network partition looks like from the workers' side (calls run
into their deadlines; nothing is refused). :class:`AgentFaults` forces per-instance states through
the simulator's Simulation service (NOT_SERVING, no answer). :class:`FaultLedger` remembers the
instances the suite itself broke, so the invariants can tell a termination caused by a genuine
agent or instance failure from one the fleet made up.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Any

import grpc

from agent.v1 import simulation_pb2, simulation_pb2_grpc

_CHUNK = 65536


class Partition:
    """A TCP forwarder on a free loopback port to ``target`` (HOST:PORT) that can be cut and healed."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._cut = threading.Event()
        self._stopped = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="chaos-partition", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    @property
    def cut(self) -> bool:
        return self._cut.is_set()

    def start(self) -> Partition:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def partition(self) -> None:
        """From now on nothing passes in either direction, on old and new connections alike."""
        self._cut.set()

    def heal(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        with self._lock:
            socks = list(self._peers)
        for sock in socks:
            sock.close()
        self._selector.close()
        self._listener.close()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock: Any = key.fileobj
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._listener.accept()
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                client.close()
                return
            for sock in (client, upstream):
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ)
            with self._lock:
                self._peers[client] = upstream
                self._peers[upstream] = client

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        with self._lock:
            peer = self._peers.get(sock)
        if not data or peer is None:
            self._close(sock)
            return
        if self._cut.is_set():
            return  # dropped on the floor: the other side hears nothing
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._peers.pop(sock, None)
            if peer is not None:
                self._peers.pop(peer, None)
        for s in (sock, peer):
            if s is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(s)
                s.close()


class AgentFaults:
    """Forces what the simulated agent of an instance answers (dialled directly, never partitioned)."""

    def __init__(self, endpoint: str) -> None:
        self._channel = grpc.insecure_channel(endpoint)
        self._stub: Any = simulation_pb2_grpc.SimulationStub(self._channel)  # type: ignore[no-untyped-call]

    def not_serving(self, instance_id: str) -> None:
        self._set(
            instance_id,
            simulation_pb2.SetApplicationStateRequest(state=simulation_pb2.FORCED_STATE_NOT_SERVING),
        )

    def silent(self, instance_id: str) -> None:
        """The agent stops answering at all (every call runs into its deadline): a dead agent."""
        self._set(instance_id, simulation_pb2.SetApplicationStateRequest(no_answer=True))

    def clear(self, instance_id: str) -> None:
        with contextlib.suppress(grpc.RpcError):  # a replaced instance has no agent any more
            self._stub.ClearApplicationState(
                simulation_pb2.ClearApplicationStateRequest(),
                metadata=(("x-vkec2-instance-id", instance_id),),
                timeout=5,
            )

    def _set(self, instance_id: str, request: Any) -> None:
        self._stub.SetApplicationState(request, metadata=(("x-vkec2-instance-id", instance_id),), timeout=5)

    def close(self) -> None:
        self._channel.close()


class FaultLedger:
    """What the suite broke on purpose: instances whose agent or instance it failed, and when."""

    def __init__(self) -> None:
        self._instances: dict[str, tuple[float, str]] = {}
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def instance(self, instance_id: str, what: str) -> None:
        with self._lock:
            self._instances.setdefault(instance_id, (time.time(), what))
            self.events.append((time.time(), f"{what} {instance_id}"))

    def note(self, what: str) -> None:
        with self._lock:
            self.events.append((time.time(), what))

    def faulted(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._instances
